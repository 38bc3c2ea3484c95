"""optimizer_ablation: plain momentum (paper) against Nesterov momentum."""

from ablations import Study, register

STUDY = register(
    Study(
        name="optimizer_ablation",
        question="Does Nesterov momentum change test error?",
        hypothesis="Nesterov momentum gives the same error within noise.",
        source="A Torch reproduction (8.29 for ResNet-20) used Nesterov momentum.",
        variants={
            "momentum": {"nesterov": False},  # paper
            "nesterov": {"nesterov": True},
        },
        baseline="momentum",
    )
)
