"""``nudenet``: NudeNet 3.4's ONNX detector, shipped in its wheel; runs offline.

Optional extra ``pinster-images[nudenet]`` (AGPL-3.0). An image is rejected when any
configured class (PINSTER_NUDENET_THRESHOLDS) is detected with at least its score.
Confidences are reported in percent, like Rekognition's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pinster_images.errors import ConfigError
from pinster_images.sniff import ImageInfo
from pinster_jobs._moderation import Label, Verdict
from pinster_jobs._rescale import decode_within
from pinster_jobs._settings import ModerationSettings

#: The detector resizes to 320x320; decoding more than this is wasted work.
DECODE_SIDE = 640
MODEL_VERSION = "nudenet-3.4/320n"


class NudeNetModerator:
    name = "nudenet"

    def __init__(self, settings: ModerationSettings, threads: int = 1) -> None:
        try:
            import nudenet
            import onnxruntime
            from nudenet import NudeDetector
        except ImportError as exc:
            raise ConfigError(
                "PINSTER_MODERATION_BACKEND=nudenet needs the optional extra: "
                "pip install 'pinster-images[nudenet]'"
            ) from exc
        self.thresholds = dict(settings.nudenet_thresholds)
        detector: Any = NudeDetector()
        # One thread: a Job's CPU share is small and predictable; the bench measures it.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model_path = str(Path(nudenet.__file__).with_name("320n.onnx"))
        detector.onnx_session = onnxruntime.InferenceSession(
            model_path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._detector = detector

    def detections(self, data: bytes, info: ImageInfo) -> list[dict[str, Any]]:
        import numpy as np

        rgb = np.asarray(decode_within(data, info, DECODE_SIDE))
        # NudeNet's own file path reads BGR (cv2.imread); give it the same.
        result: list[dict[str, Any]] = self._detector.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
        return result

    def moderate(self, data: bytes, info: ImageInfo) -> Verdict:
        labels = tuple(
            Label(name=str(found["class"]), confidence=float(found["score"]) * 100.0)
            for found in self.detections(data, info)
            if found["class"] in self.thresholds
            and float(found["score"]) >= self.thresholds[found["class"]]
        )
        return Verdict(
            decision="Rejected" if labels else "Approved",
            backend=self.name,
            threshold=min(self.thresholds.values(), default=1.0) * 100.0,
            model_version=MODEL_VERSION,
            labels=labels,
        )
