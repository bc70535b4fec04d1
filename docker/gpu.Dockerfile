# tfscale on NVIDIA GPUs: TensorFlow with CUDA from pip (the host needs only the NVIDIA driver and
# the NVIDIA container toolkit). Build from the repository root:
#   docker build -f docker/gpu.Dockerfile -t tfscale:gpu .
#   docker run --gpus all --rm -v "$PWD/runs:/runs" tfscale:gpu
FROM python:3.11-slim

WORKDIR /opt/tfscale
COPY setup.cfg pyproject.toml README.md ./
COPY tfscale/ tfscale/
COPY experiments/ experiments/
RUN pip install --no-cache-dir 'tensorflow[and-cuda]==2.21.*' \
 && pip install --no-cache-dir -e .

ENV TF_USE_LEGACY_KERAS=1 PYTHONUNBUFFERED=1
# Any experiment: replace the arguments, e.g.
#   docker run --gpus all tfscale:gpu --config=experiments/configs/lm.py --workdir=/runs/lm
ENTRYPOINT ["python", "-m", "experiments.train"]
CMD ["--config=experiments/configs/digits_mlp.py", "--workdir=/runs/digits_mlp"]
