"""resnet-repro: why reproductions of He et al. 2015 (CIFAR-10 ResNets) fall short."""

__version__ = "0.1.0"
