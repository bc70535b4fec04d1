# tfscale on a Cloud TPU VM: tensorflow-tpu with libtpu from the Cloud TPU release index.
# Build and run on the TPU VM (the container needs the host's /dev/accel* devices and network):
#   docker build -f docker/tpu.Dockerfile -t tfscale:tpu .
#   docker run --privileged --net=host --rm -v "$PWD/runs:/runs" tfscale:tpu
# With a gs:// workdir the VM's service account provides the credentials.
FROM python:3.11-slim

WORKDIR /opt/tfscale
COPY setup.cfg pyproject.toml README.md ./
COPY tfscale/ tfscale/
COPY experiments/ experiments/
# The project depends on `tensorflow`; on a TPU VM `tensorflow-tpu` provides the same package.
RUN pip install --no-cache-dir -e . \
 && pip uninstall -y tensorflow \
 && pip install --no-cache-dir 'tensorflow-tpu==2.21.*' \
      -f https://storage.googleapis.com/libtpu-tf-releases/index.html

ENV TF_USE_LEGACY_KERAS=1 PYTHONUNBUFFERED=1
ENTRYPOINT ["python", "-m", "experiments.train"]
CMD ["--config=experiments/configs/lm.py", "--workdir=/runs/lm", "--config.distribute.strategy=tpu"]
