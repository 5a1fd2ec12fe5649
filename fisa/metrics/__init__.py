"""Evaluation metrics as the references compute them: `panoptic` (PQ, panopticapi), `semantic`
(mIoU family, detectron2), `referring` (mIoU / oIoU / P@t). See docs/metrics.md."""
