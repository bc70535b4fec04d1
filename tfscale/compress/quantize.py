"""Quantization-aware training of the inner functional network, and pruning-preserving QAT.

Layers that tfmot's default 8-bit scheme supports are quantized; the others (such as the input
`Rescaling`, which a whole-model `quantize_model` refuses) are annotated to stay float, and the
TFLite converter quantizes around them. With `preserve_sparsity` the
network (pruned, wrappers stripped) is quantized with tfmot's collaborative-optimisation scheme
`Default8BitPrunePreserveQuantizeScheme`, which keeps pruned weights at zero while fine-tuning.
"""
import tf_keras as keras
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry)

from tfscale import trainer
from tfscale.compress import prune


class FloatQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Leaves a layer the 8-bit scheme does not support in float (weights and output)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


def foreign_layer(network):
    """The first layer `apply` cannot quantize: one not from Keras itself (tfmot rebuilds each
    wrapped layer by class name, and `apply` registers no classes of its own but
    FloatQuantizeConfig), or None."""
    return next((l for l in network.layers if type(l).__module__.split(".")[0] != "tf_keras"), None)


def apply(network, preserve_sparsity=False):
    """A quantization-aware copy of `network` (call in the strategy scope)."""
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()

    def annotate(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        config = None if registry.supports(layer) else FloatQuantizeConfig()
        return tfmot.quantization.keras.quantize_annotate_layer(layer, quantize_config=config)

    annotated = keras.models.clone_model(prune.copy(network), clone_function=annotate)
    with tfmot.quantization.keras.quantize_scope({"FloatQuantizeConfig": FloatQuantizeConfig}):
        if preserve_sparsity:
            return tfmot.quantization.keras.quantize_apply(
                annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
        return tfmot.quantization.keras.quantize_apply(annotated)


class QATModel(trainer.AccumulatingModel):
    """The accumulating trainer for a quantization-aware network."""

    unroll_micro_batches = True  # the fake-quant range updates synchronise replicas
