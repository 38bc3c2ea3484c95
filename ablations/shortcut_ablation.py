"""shortcut_ablation: identity (A) against projection shortcuts (B, C)."""

from ablations import Study, register

STUDY = register(
    Study(
        name="shortcut_ablation",
        question="Do projection shortcuts change test error on CIFAR-10?",
        hypothesis="Options B and C add parameters and lower error slightly, as on "
        "ImageNet (Table 3); reproductions that use B are not comparable to Table 6.",
        source="Table 6 uses option A; many reproductions use 1x1 projections (B).",
        variants={
            "A": {"shortcut": "A"},  # paper (CIFAR)
            "B": {"shortcut": "B"},  # projection where the shape changes
            "C": {"shortcut": "C"},  # projection on every block
        },
        baseline="A",
    )
)
