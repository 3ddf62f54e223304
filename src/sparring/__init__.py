"""sparring: attack, defend and audit image classifiers against adversarial examples."""

__version__ = "0.1.0"
