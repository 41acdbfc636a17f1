"""The one metric registry holding every number the project's tables report (docs/method.md §3-4).

    from jaxdeid.metrics import get_metric, list_metrics
    get_metric("ssim")(private, original)        # [B]
    list_metrics()                                # every registered name

Modules (each metric registers itself on import):

    registry.py        ``register_metric`` decorator, ``get_metric``, ``list_metrics``; calling conventions
    image.py           ssim, psnr (dm-pix), cosine_similarity, image_cosine_similarity (paper's "CS")
    verification.py    1:1 pairs (make_pairs), TPR / FPR / accuracy at 0.3, ROC, AUC, TAR@FAR
    identification.py  1:N gallery enrollment and tpr_1n / fpr_1n / reject_1n (Table 3 reading)
    success.py         Fig. 6 success rate (detected, valid, deidentified) and box IoU
    frechet.py         Fréchet distance and KID between two feature sets (generator quality)
    stats.py           bootstrap confidence intervals over identities
    plots.py           ROC curves to PNG
"""

from .frechet import frechet_distance, kernel_distance
from .identification import enroll_gallery, identification_rates, identify
from .image import cosine_similarity, image_cosine_similarity, psnr, ssim
from .registry import Metric, get_metric, list_metrics, register_metric
from .stats import bootstrap_ci, bootstrap_distribution, identification_ci, verification_ci
from .success import iou, success_rate
from .verification import (DEFAULT_THRESHOLD, auc, make_pairs, pair_scores, roc, roc_curve, tar_at_far,
                           verification_rates)

__all__ = [
    "Metric", "get_metric", "list_metrics", "register_metric",
    "ssim", "psnr", "cosine_similarity", "image_cosine_similarity",
    "DEFAULT_THRESHOLD", "make_pairs", "pair_scores", "verification_rates", "roc_curve", "roc", "auc", "tar_at_far",
    "enroll_gallery", "identify", "identification_rates",
    "iou", "success_rate",
    "bootstrap_distribution", "bootstrap_ci", "verification_ci", "identification_ci",
    "frechet_distance", "kernel_distance", "plot_roc",
]


def __getattr__(name: str):
    # plots.py pulls in matplotlib (~1 s); load it only when a plot is asked for.
    if name == "plot_roc":
        from .plots import plot_roc  # local: matplotlib.pyplot takes ~0.7 s to import (measured); only plots need it
        return plot_roc
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
