"""Command-line tools around the library: model summary, sweeps and their
summaries, the local multi-process launcher. The library never imports them."""
