"""Defenses: modules in front of or inside a model, training recipes, detectors, certification.

Every registered defense is a DefenseSpec (base.py): its kind ("preprocess", "noise", "training",
"detector", "certified"), whether it is differentiable (False: it provides a BPDA surrogate) and random
(True: an honest attack averages over its randomness with EOT), its typed parameters and the capabilities
the chain builder, the experiment, the CLI and the tests read (DESIGN.md, "Defense").

Every module of this package is imported here, so a file dropped into the package that registers a
DefenseSpec is a defense at once; installed plugins register through the "sparring.defenses" entry point.
"""

from __future__ import annotations

import importlib
import pkgutil

from .adversarial_training import (
    METHODS,
    Recipe,
    adversarial_training,
    ensemble_adversarial_training,
    fgsm_adversarial_training,
    fgsm_rs_adversarial_training,
    pgd_adversarial_training,
    trades_training,
)
from .base import DEFENSES, KINDS, Context, DefenseSpec, Fitted, Param, Trained, is_differentiable, is_random, register
from .bpda import BPDA, Defended, bpda
from .build import apply_defenses, check_defense, load_defended, network_and_parts
from .contrastive import (
    CONTRASTIVE_TRAINING,
    Contrastive,
    LatentNN,
    contrastive_loss,
    contrastive_training,
    triplet_loss,
)
from .detection import Detector, DetectorGuard, FeatureSqueezing, detection_rate_at_fpr, roc_auc, threshold_at_fpr
from .detector import DETECTOR_TRAINING, BinaryDetector, train_detector
from .distillation import DISTILL_TRAINING, SoftLabels, Temperature, distill, soft_labels
from .latent import PENULTIMATE, latent_features, latent_forward, latent_hook, latent_layer, latent_view
from .noise import GaussianNoise, insert_noise
from .preprocess import JPEG, BitDepth, Filter, GaussianBlur, MedianBlur, quant_table
from .reconstruction import (
    AUTOENCODER_TRAINING,
    Denoising,
    ReconstructionDetector,
    Reformer,
    autoencoder_parts,
    build_autoencoder,
    train_autoencoder,
)
from .smoothing import (
    NoiseAugmented,
    SmoothedClassifier,
    certified_accuracy,
    clopper_pearson_lower,
    noise_augment,
    noise_training,
)
from .sweep import ARTICLE_ATTACK, DEFAULT_FILTERS, SWEEP_TRAINING, filter_sweep, honest_check, make_filter

for _module in pkgutil.iter_modules(__path__):  # the files nobody listed above register themselves too
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ARTICLE_ATTACK", "AUTOENCODER_TRAINING", "BPDA", "CONTRASTIVE_TRAINING", "DEFAULT_FILTERS", "DEFENSES",
           "DETECTOR_TRAINING", "DISTILL_TRAINING", "JPEG", "KINDS", "METHODS", "PENULTIMATE", "SWEEP_TRAINING",
           "BinaryDetector", "BitDepth", "Context", "Contrastive", "Defended", "DefenseSpec", "Denoising", "Detector",
           "DetectorGuard", "FeatureSqueezing", "Filter", "Fitted", "GaussianBlur", "GaussianNoise", "LatentNN",
           "MedianBlur", "NoiseAugmented", "Param", "Recipe", "ReconstructionDetector", "Reformer",
           "SmoothedClassifier", "SoftLabels", "Temperature", "Trained", "adversarial_training", "apply_defenses",
           "autoencoder_parts", "bpda", "build_autoencoder", "certified_accuracy", "check_defense",
           "clopper_pearson_lower", "contrastive_loss", "contrastive_training", "detection_rate_at_fpr", "distill",
           "ensemble_adversarial_training", "fgsm_adversarial_training", "fgsm_rs_adversarial_training", "filter_sweep",
           "honest_check", "insert_noise", "is_differentiable", "is_random", "latent_features", "latent_forward",
           "latent_hook", "latent_layer", "latent_view", "load_defended", "make_filter", "network_and_parts",
           "noise_augment", "noise_training", "pgd_adversarial_training", "quant_table", "register", "roc_auc",
           "soft_labels", "threshold_at_fpr", "trades_training", "train_autoencoder", "train_detector", "triplet_loss"]
