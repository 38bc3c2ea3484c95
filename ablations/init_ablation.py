"""init_ablation: He init with fan_out (Caffe MSRA) or fan_in, or PyTorch's default."""

from ablations import Study, register

STUDY = register(
    Study(
        name="init_ablation",
        question="Does the weight initialisation change test error?",
        hypothesis="With BN, He fan_out and fan_in agree; PyTorch's default init (smaller "
        "weights) trains as well.",
        source="The paper uses He init; reproductions call kaiming_normal_ with fan_in or "
        "keep PyTorch's default.",
        variants={
            "fan_out": {"init": "kaiming_fan_out"},  # Caffe's MSRA filler
            "fan_in": {"init": "kaiming_fan_in"},
            "torch_default": {"init": "torch_default"},
        },
        baseline="fan_out",
    )
)
