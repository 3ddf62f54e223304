"""Attacks: functions with keyword-only hyperparameters, registered in ATTACKS."""

from .fgsm import fgsm, fgv, rand_fgsm, step_ll
from .pgd import bim, iterative_l2, pgd
from .registry import ATTACKS

__all__ = ["ATTACKS", "bim", "fgsm", "fgv", "iterative_l2", "pgd", "rand_fgsm", "step_ll"]
