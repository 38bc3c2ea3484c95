"""weight_decay_ablation: weight decay on BN parameters and biases or not."""

from ablations import Study, register

STUDY = register(
    Study(
        name="weight_decay_ablation",
        question="Does exempting BN parameters and biases from weight decay change error?",
        hypothesis="Decay on BN scales (Caffe, the paper) and no decay give similar error.",
        source="Caffe decays every parameter; many modern recipes exempt BN and biases.",
        variants={
            "decay_all": {"decay_bn": True},  # paper / Caffe
            "no_decay_bn": {"decay_bn": False},
        },
        baseline="decay_all",
    )
)
