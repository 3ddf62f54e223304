"""Attacks: functions with keyword-only hyperparameters, registered in ATTACKS."""

from .fgsm import fgsm, fgv, rand_fgsm, step_ll
from .pgd import bim, iterative_l2, pgd
from .registry import ATTACKS

__all__ = ["ATTACKS", "bim", "fgsm", "fgv", "iterative_l2", "pgd", "rand_fgsm", "step_ll"]

from .apgd import apgd, apgd_t  # noqa: E402
from .square import square  # noqa: E402
from .strong import strong  # noqa: E402

__all__ += ["apgd", "apgd_t", "square", "strong"]

from .cw import cw_l2  # noqa: E402  minimal-perturbation attacks
from .ddn import ddn  # noqa: E402
from .deepfool import deepfool  # noqa: E402
from .jsma import jsma  # noqa: E402
from .lbfgs import lbfgs  # noqa: E402

__all__ += ["cw_l2", "ddn", "deepfool", "jsma", "lbfgs"]

from .eot import PRESETS, Transform, eot, eot_pgd, evaluate_under_transforms  # noqa: E402  black-box, transfer, EOT
from .fooling import fooling_images  # noqa: E402
from .substitute import substitute, train_substitute  # noqa: E402
from .transfer import transfer  # noqa: E402
from .universal import universal, universal_perturbation  # noqa: E402

__all__ += ["PRESETS", "Transform", "eot", "eot_pgd", "evaluate_under_transforms", "fooling_images", "substitute",
            "train_substitute", "transfer", "universal", "universal_perturbation"]
