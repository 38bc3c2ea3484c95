"""precision_ablation: fp32 against TF32 and bfloat16 autocast."""

from ablations import Study, register

STUDY = register(
    Study(
        name="precision_ablation",
        question="Does reduced precision change test error?",
        hypothesis="TF32 and bf16 autocast train to the same error as fp32.",
        source="The paper trained in fp32 (Caffe); modern GPUs default to TF32 or bf16.",
        variants={
            "fp32": {"precision": "fp32"},
            "tf32": {"precision": "tf32"},
            "bf16": {"precision": "bf16"},
        },
        baseline="fp32",
    )
)
