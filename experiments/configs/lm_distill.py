"""A large byte-level LM on `pycode` teaches a small one: `experiments.compress` trains (or
loads, `compress.distill.teacher_workdir`) the teacher, distills the student, trains the same
student alone for the same updates, and exports both as TFLite.

Variants: default (teacher = `lm.py`'s 4-layer model; student 1 layer, d_model 64) and `tiny`
(seconds; tests).
"""
from experiments.configs import lm

STUDENT = {  # variant -> transformer_lm knobs of the student (same context as the teacher)
    None: dict(num_layers=1, d_model=64, num_heads=2, d_ff=256, seq_len=128),
    "tiny": dict(num_layers=1, d_model=16, num_heads=2, d_ff=32, seq_len=32),
}


def get_config(arg=None):
    arg = arg or None
    c = lm.get_config(arg)  # the teacher; raises on an unknown variant
    c.unlock()
    c.compress.variants = "float32,dynamic_range,float16,distilled,student_alone"
    c.compress.eval_examples = 64 if arg == "tiny" else 512  # windows run through each .tflite
    c.compress.latency_runs = 20 if arg == "tiny" else 50
    c.compress.distill.student.name = "transformer_lm"
    for key, value in STUDENT[arg].items():
        c.compress.distill.student[key] = value
    c.compress.distill.student.dropout = 0.0
    c.compress.distill.student.tie_embeddings = True
    c.compress.distill.temperature = 2.0
    c.compress.distill.alpha = 0.5
    c.compress.distill.steps = 10 if arg == "tiny" else 400
    return c.lock()
