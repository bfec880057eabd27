"""metrics.jsonl after resumes: each step once (`metrics.drop_records_after`)."""

import json

from adanet_jax import metrics


def test_records_past_the_restored_step_and_a_cut_line_are_dropped(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  records = [{'step': s, 'train/loss': 1.0 / s} for s in (2, 4, 6)] + [{'step': 6, 'eval/x': 1}]
  path.write_text(''.join(json.dumps(r) + '\n' for r in records) + '{"step": 8, "tr')
  metrics.drop_records_after(str(path), 4)  # killed after step 6's log, resumed from 4
  assert [json.loads(l) for l in path.read_text().splitlines()] == records[:2]
  before = path.stat().st_mtime_ns
  metrics.drop_records_after(str(path), 4)  # nothing to drop: not rewritten
  assert path.stat().st_mtime_ns == before
  metrics.drop_records_after(str(tmp_path / 'none.jsonl'), 0)  # no file yet: nothing made
  assert not (tmp_path / 'none.jsonl').exists()
