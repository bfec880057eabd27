"""The paper: gate, BatchNorm, ResNets, config-to-model, MAC accounting,
PyTorch weights. Imports only itself, the config and the errors."""
