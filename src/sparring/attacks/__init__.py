"""Attacks: functions with keyword-only hyperparameters, registered in ATTACKS."""

from .fgsm import fgsm, fgv, rand_fgsm, step_ll
from .pgd import bim, iterative_l2, pgd
from .registry import ATTACKS

__all__ = ["ATTACKS", "bim", "fgsm", "fgv", "iterative_l2", "pgd", "rand_fgsm", "step_ll"]

from .cw import cw_l2  # noqa: E402  minimal-perturbation attacks
from .ddn import ddn  # noqa: E402
from .deepfool import deepfool  # noqa: E402
from .jsma import jsma  # noqa: E402
from .lbfgs import lbfgs  # noqa: E402

__all__ += ["cw_l2", "ddn", "deepfool", "jsma", "lbfgs"]
