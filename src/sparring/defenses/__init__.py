"""Defenses: modules in front of or inside a model, training recipes, detectors.

Every registered defense declares `kind` ("preprocess", "noise", "training", "detector",
"certified"), `differentiable` (False: it provides a BPDA surrogate) and `random` (True: an
honest attack averages over its randomness with EOT). The audit and the adaptive attacks read
those flags (DESIGN.md, "Defense").
"""

from __future__ import annotations

from .adversarial_training import (adversarial_training, ensemble_adversarial_training, fgsm_adversarial_training,
                                   fgsm_rs_adversarial_training, pgd_adversarial_training, trades_training)
from .bpda import BPDA, Defended, bpda, is_differentiable, is_random
from .contrastive import (LatentNN, contrastive_loss, contrastive_training, latent_features, latent_view,
                          plot_latent, triplet_loss)
from .detection import DetectorGuard, FeatureSqueezing, detection_rate_at_fpr, roc_auc, threshold_at_fpr
from .detector import BinaryDetector, train_detector
from .distillation import Temperature, distill, soft_labels
from .noise import GaussianNoise, insert_noise
from .preprocess import JPEG, BitDepth, GaussianBlur, MedianBlur, quant_table
from .reconstruction import ReconstructionDetector, Reformer, build_autoencoder, train_autoencoder
from .registry import DEFENSES
from .sweep import ARTICLE_ATTACK, DEFAULT_FILTERS, filter_sweep, honest_check, make_filter
from .smoothing import SmoothedClassifier, certified_accuracy, clopper_pearson_lower, noise_augment, noise_training

__all__ = ["ARTICLE_ATTACK", "DEFAULT_FILTERS", "filter_sweep", "honest_check", "make_filter", "LatentNN", "contrastive_loss", "contrastive_training", "latent_features", "latent_view", "plot_latent",
           "triplet_loss", "ReconstructionDetector", "Reformer", "build_autoencoder", "train_autoencoder", "BinaryDetector", "DetectorGuard", "FeatureSqueezing", "Temperature", "detection_rate_at_fpr",
           "distill", "roc_auc", "soft_labels", "threshold_at_fpr", "train_detector", "adversarial_training", "ensemble_adversarial_training", "fgsm_adversarial_training",
           "fgsm_rs_adversarial_training", "pgd_adversarial_training", "trades_training", "BPDA", "DEFENSES", "BitDepth", "Defended", "GaussianBlur", "GaussianNoise", "JPEG", "MedianBlur",
           "SmoothedClassifier", "bpda", "certified_accuracy", "clopper_pearson_lower", "insert_noise",
           "is_differentiable", "is_random", "noise_augment", "noise_training", "quant_table"]
