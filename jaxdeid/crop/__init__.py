"""Face cropping ("interception") network and the crop / paste-back ops (docs/method.md §1 components 2, 8).

    detector, variables = load_trained(config)         # after `jaxdeid train crop`
    boxes, scores = detect(detector, variables, frames)
    faces = aligned_crop(frames, boxes, config.data.resolution, config.crop.align_margin)
    frames = paste_back_aligned(frames, private_faces, boxes, config.crop.align_margin, config.crop.feather)
"""

from .detector import FaceDetector, decode, detect, detect_and_crop, detection_loss, make_detector
from .ops import (aligned_crop, box_iou, crop, expand_boxes, feather_mask, paste_back, paste_back_aligned,
                  square_boxes)
from .train import detection_rate, detection_stats, load_trained, make_cropper, make_task

__all__ = [
    "FaceDetector", "decode", "detect", "detect_and_crop", "detection_loss", "make_detector",
    "aligned_crop", "box_iou", "crop", "expand_boxes", "feather_mask", "paste_back", "paste_back_aligned",
    "square_boxes",
    "detection_rate", "detection_stats", "load_trained", "make_cropper", "make_task",
]
