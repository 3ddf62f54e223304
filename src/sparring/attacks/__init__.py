"""Attacks: functions with keyword-only hyperparameters, registered in ATTACKS.

Gradient family (one loop, loop.py): fgsm, fgv, rand_fgsm, step_ll, bim, pgd, iterative_l2; Auto-PGD: apgd,
apgd_t, strong (the AutoAttack-style ensemble); minimal perturbations: cw_l2, ddn, deepfool, jsma, lbfgs;
black-box: square, substitute; transfer; universal; EOT: eot, eot_pgd; fooling images (not an ATTACKS entry).
"""

from .apgd import apgd, apgd_t
from .cw import cw_l2
from .ddn import ddn
from .deepfool import deepfool
from .eot import PRESETS, Transform, eot, eot_pgd, evaluate_under_transforms
from .fgsm import fgsm, fgv, rand_fgsm, step_ll
from .fooling import fooling_images
from .jsma import jsma
from .lbfgs import lbfgs
from .loop import gradient_loop
from .losses import LOSSES, get_loss, is_adversarial
from .pgd import bim, iterative_l2, pgd
from .registry import ATTACKS
from .square import square
from .strong import strong
from .substitute import SUBSTITUTE_TRAINING, substitute, train_substitute
from .transfer import Ensemble, transfer
from .universal import universal, universal_perturbation

__all__ = ["ATTACKS", "LOSSES", "PRESETS", "SUBSTITUTE_TRAINING", "Ensemble", "Transform", "apgd", "apgd_t", "bim",
           "cw_l2", "ddn", "deepfool", "eot", "eot_pgd", "evaluate_under_transforms", "fgsm", "fgv", "fooling_images",
           "get_loss", "gradient_loop", "is_adversarial", "iterative_l2", "jsma", "lbfgs", "pgd", "rand_fgsm",
           "square", "step_ll", "strong", "substitute", "train_substitute", "transfer", "universal",
           "universal_perturbation"]
