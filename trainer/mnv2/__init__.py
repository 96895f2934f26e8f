"""MobileNetV2 on MindSpore: the trainer, its launcher and the contract shared with the operator.

Importing this package never imports MindSpore: the operator image installs it without MindSpore.
"""

__version__ = "0.1.0"
