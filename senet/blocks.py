"""Building blocks of the SE family: conv+BN, the SE gate, stems, residual units, Inception modules.

Layer names are the official Caffe layer names with '/' replaced by '_' (Keras forbids '/'),
so `conv2_1_1x1_reduce/bn` (+ its `.../bn/scale`) is the BatchNormalization layer
`conv2_1_1x1_reduce_bn`; timm's modern nets use the same names for the same roles. Weight
converters rely on this (see `senet.variants.layer names`).

Padding is explicit (ZeroPadding2D + 'valid') wherever Caffe's and PyTorch's symmetric padding
differs from Keras' 'same' (strided convs), so every backend computes the reference's windows.
"""

from __future__ import annotations

import contextlib
import contextvars

import keras
from keras import layers

from senet.variants import Variant, keras_name, stem_convs, unit_convs

BN_EPSILON = 1e-5  # Caffe's and PyTorch's BatchNorm default, used by every published SE net
# Keras' default momentum is 0.99; PyTorch's 0.1 (timm, the reference trainer) is Keras' 0.9.
BN_MOMENTUM = 0.9


def channel_axis() -> int:
    return 1 if keras.config.image_data_format() == "channels_first" else -1


def channels(x) -> int:
    return x.shape[channel_axis()]


@keras.saving.register_keras_serializable(package="senet")
class Conv2D(layers.Conv2D):
    """Keras' Conv2D (same weights, same layer), computed the fast way on each backend.

    - TensorFlow, groups > 1: TensorFlow's own grouped convolution. Keras wraps every grouped
      conv in an XLA function, a workaround for old TensorFlow CPU kernels; TensorFlow 2.21's
      kernel is about twice as fast here, and the plain op exports to ONNX as one grouped
      `Conv` (tf2onnx cannot convert the XLA function).
    - PyTorch, channels_last: Keras copies every input to NCHW, then again to channels_last
      memory, and copies the kernel, at every call. The same convolution runs on views here
      (an NHWC tensor is an NCHW tensor in channels_last memory, oneDNN's fast layout), with
      the kernel's layout kept between calls while the kernel does not change.
    - JAX, groups > 1: XLA:CPU's grouped convolution is slow (about 1 GFLOP/s on the
      32-group 3x3 convs of SE-ResNeXt); `grouped_chunks` splits it into a few dense
      convolutions with block-diagonal kernels (see there).
    - JAX, 1x1, and any dense conv in bfloat16: a matrix product (`_jax_product`).
    Both JAX forms only where JAX compiles for the CPU (`_xla_cpu`). Other cases are Keras'
    own.
    """

    def build(self, input_shape):
        if not _WEIGHTS_TO_COME.get():
            return super().build(input_shape)
        init, self.kernel_initializer = self.kernel_initializer, keras.initializers.Zeros()
        try:
            super().build(input_shape)
        finally:
            self.kernel_initializer = init  # the config keeps the real initializer

    def convolution_op(self, inputs, kernel):
        backend = keras.backend.backend()
        channels_last = self.data_format == "channels_last"
        if backend == "tensorflow" and self.groups > 1 and channels_last:
            import tensorflow as tf

            return tf.nn.convolution(inputs, kernel, strides=self.strides,
                                     padding=self.padding.upper(), dilations=self.dilation_rate)
        if backend == "torch" and channels_last and self.dilation_rate == (1, 1):
            return self._torch_conv(inputs, kernel)
        if backend == "jax" and _xla_cpu() and self.dilation_rate == (1, 1):
            if self.groups > 1:
                return self._jax_grouped(inputs, kernel)
            if channels_last and (self.kernel_size == (1, 1) or _narrow(inputs.dtype)):
                return self._jax_product(inputs, kernel)
        return super().convolution_op(inputs, kernel)

    def _jax_product(self, inputs, kernel):
        """The conv as one matrix product: each output pixel's window (kh*kw*cin values, the
        kernel's HWIO order) times the kernel as a (kh*kw*cin, cout) matrix.

        - 1x1: the window is the pixel, so the product needs no copy; XLA:CPU runs the dot
          about twice as fast as the same convolution (`benchmarks/pointwise_convs.py`).
        - bfloat16 or float16 (a mixed policy): the product accumulates into float32, rounded
          once at the end, XLA:CPU's fast bfloat16 form (81 against 136 ms for SE-ResNet-50's
          1x1 convs, `benchmarks/pointwise_convs.py --backend jax --bfloat16`). XLA:CPU has no
          fast bfloat16 convolution (an ad hoc profile of SE-ResNet-50: its 3x3 convs no faster
          than in float32, its 7x7 stem 2.3x slower), so in bfloat16 larger windows are copied out and multiplied
          the same way. The copies move 16-bit integers of the same bits: XLA:CPU copies
          bfloat16 through float32, twice the bytes and two conversions (SE-ResNet-50, 16
          images: 1.16x -> 1.34x). The forward is 1.13-1.34x as fast on SE-ResNet-50 and
          SENet-154 (`benchmarks/jax_products.py`). In float32 XLA's convolution is as fast
          (0.97-0.99x with the product), so it stays.
        'same' pads as Keras does (the extra row or column after), so every case computes
        Keras' windows. The gradient of a larger window is XLA's convolution's, as before:
        through the copies a bfloat16 training step was slower (SE-ResNet-50, 16 images:
        0.92x, ad hoc); with the convolution's gradient it is not (1.02x, `--train`)."""
        import jax

        if self.kernel_size == (1, 1):
            return self._jax_windows_product(inputs, kernel)

        def convolution(x, k):  # in the product's output dtype, for its cotangent
            return super(Conv2D, self).convolution_op(x, k).astype(x.dtype)

        @jax.custom_vjp
        def product(x, k):
            return self._jax_windows_in_chunks(x, k)

        product.defvjp(lambda x, k: (product(x, k), (x, k)),
                       lambda saved, dy: jax.vjp(convolution, *saved)[1](dy))
        return product(inputs, keras.ops.convert_to_tensor(kernel))

    def _jax_windows_in_chunks(self, inputs, kernel):
        """`_jax_windows_product` over groups of images, one group after another
        (`lax.map`), so that a group's windows stay within `WINDOWS_BYTES` and in the CPU's
        cache: the windows of a whole batch are kh*kw times the input. Alone (16 images in
        bfloat16, `benchmarks/jax_layers.py`) SE-ResNet-50's 3x3 conv at 56x56 took 55.8 ms
        from the whole batch's windows, 23.3 in groups of 2 (XLA's convolution 38.4), the
        7x7 stem 67.2 -> 37.7 ms; in the whole forward much less is won
        (`benchmarks/jax_products.py`: SE-ResNet-50 1.05x and 1.07x at 16 images, its
        gradient 1.04x; SE-ResNeXt-50 1.01x, SENet-154 0.99x). The groups' outputs are
        written as 16-bit integers of the same bits: XLA:CPU writes bfloat16 through float32
        (SE-ResNet-50, 16 images, an ad hoc profile: the writes 17 -> 4 ms)."""
        import jax
        import jax.numpy as jnp

        n, h, w, c = inputs.shape
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        if not isinstance(n, int):
            return self._jax_windows_product(inputs, kernel)
        image = jnp.dtype(inputs.dtype).itemsize * kh * kw * c * -(-h // sh) * -(-w // sw)
        per = max(1, min(n, WINDOWS_BYTES // image))
        while n % per:
            per -= 1
        if per == n:
            return self._jax_windows_product(inputs, kernel)

        def product(group):
            y = self._jax_windows_product(group, kernel)
            return jax.lax.bitcast_convert_type(y, jnp.uint16) if _narrow(y.dtype) else y

        out = jax.lax.map(product, jnp.reshape(inputs, (n // per, per, h, w, c)))
        out = jnp.reshape(out, (n,) + out.shape[2:])
        return jax.lax.bitcast_convert_type(out, inputs.dtype) if _narrow(inputs.dtype) else out

    def _jax_windows_product(self, inputs, kernel):
        import jax
        import jax.numpy as jnp

        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        dtype = inputs.dtype
        if _narrow(dtype) and (kh, kw) != (1, 1):
            inputs = jax.lax.bitcast_convert_type(inputs, jnp.uint16)
        if self.padding == "same":
            pads = [(0, 0)] + [_same_padding(n, k, s) for n, k, s in
                               zip(inputs.shape[1:3], (kh, kw), (sh, sw))] + [(0, 0)]
            inputs = jnp.pad(inputs, pads)
        _, h, w, c = inputs.shape
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        taps = [inputs[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
                for i in range(kh) for j in range(kw)]
        windows = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
        windows = jax.lax.bitcast_convert_type(windows, dtype)
        y = jnp.matmul(jnp.reshape(windows, (-1, kh * kw * c)),
                       jnp.reshape(kernel, (kh * kw * c, -1)),
                       preferred_element_type=jnp.float32 if _narrow(dtype) else None)
        return jnp.reshape(y.astype(dtype), (-1, oh, ow, y.shape[-1]))

    def _torch_conv(self, inputs, kernel):
        import torch

        kh, kw = self.kernel_size
        if self.padding == "same" and (kh % 2 == 0 or kw % 2 == 0 or self.strides != (1, 1)):
            return super().convolution_op(inputs, kernel)  # asymmetric padding: Keras pads
        pad = (kh // 2, kw // 2) if self.padding == "same" else 0
        kernel = getattr(kernel, "value", kernel)  # the torch tensor behind a Keras variable
        cached = getattr(self, "_torch_kernel", None)
        if torch.is_grad_enabled() or cached is None or cached[0] is not kernel \
                or cached[1] != kernel._version:
            w = kernel.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
            if not torch.is_grad_enabled():  # training recomputes: the kernel changes each step
                self._torch_kernel = (kernel, kernel._version, w)
        else:
            w = cached[2]
        x = inputs.permute(0, 3, 1, 2)  # a view; NHWC memory is NCHW in channels_last
        y = torch.nn.functional.conv2d(x, w, stride=self.strides, padding=pad,
                                       groups=self.groups)
        return y.permute(0, 2, 3, 1)

    def _jax_grouped(self, inputs, kernel):
        from jax import lax

        layout = ("NHWC", "HWIO", "NHWC") if self.data_format == "channels_last" else \
            ("NCHW", "HWIO", "NCHW")
        axis = 3 if self.data_format == "channels_last" else 1
        chunks = grouped_chunks(self.groups, kernel.shape[2])
        cin, cout = kernel.shape[2] * self.groups, kernel.shape[3]
        outs = []
        for i in range(chunks):
            x = lax.slice_in_dim(inputs, i * cin // chunks, (i + 1) * cin // chunks, axis=axis)
            k = _block_diagonal(kernel[:, :, :, i * cout // chunks:(i + 1) * cout // chunks],
                                self.groups // chunks)
            outs.append(lax.conv_general_dilated(x, k, self.strides, self.padding.upper(),
                                                 dimension_numbers=layout))
        return outs[0] if chunks == 1 else lax.concatenate(outs, axis)


WINDOWS_BYTES = 4 << 20
"""The most bytes of windows `Conv2D._jax_windows_in_chunks` copies out at once. Tuned ad hoc
on SE-ResNet-50's 3x3 and stem shapes on a CPU with 32 MiB of L3 shared by 2 cores: 4 MiB
was as fast as 8 or faster, 2 and 16 slower on some shapes."""


def _xla_cpu() -> bool:
    """Whether JAX compiles for the CPU. senet's JAX forms of convs and pools were chosen by
    timing XLA:CPU's kernels; on a GPU or TPU Keras' own ops reach the vendor's convolution
    libraries, where a grouped conv in dense chunks or a copy of every window would only
    cost (not measured here: this project's machine has no accelerator)."""
    import jax

    return jax.default_backend() == "cpu"


def _narrow(dtype) -> bool:
    return str(dtype) in ("bfloat16", "float16")


def _same_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    """Keras' (and TensorFlow's) 'same': ceil(size / stride) outputs, the odd pixel after."""
    total = max((-(-size // stride) - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


_WEIGHTS_TO_COME = contextvars.ContextVar("senet_weights_to_come", default=False)


@contextlib.contextmanager
def weights_to_come():
    """Convolution kernels built in this context start as zeros, not random: for a model
    whose weights are loaded next, or whose shapes alone are used. The random draws would
    be wasted there, and they are not cheap (on JAX each kernel shape first compiles a
    random-number program)."""
    token = _WEIGHTS_TO_COME.set(True)
    try:
        yield
    finally:
        _WEIGHTS_TO_COME.reset(token)


def grouped_chunks(groups: int, in_per_group: int) -> int:
    """How many dense convs replace a `groups`-group conv on JAX.

    Each chunk computes groups/chunks groups as one dense conv with a block-diagonal kernel,
    doing groups/chunks times the arithmetic of those groups. Measured on XLA:CPU (16 images,
    3x3, 32 and 64 groups, 56x56 to 7x7), chunks of about 16 input channels are fastest:
    3.5-6x faster than XLA's grouped conv (e.g. 56x56x128, 32 groups: 475 -> 83 ms).
    """
    per = max(1, min(groups, 16 // max(1, in_per_group)))
    while groups % per:
        per -= 1
    return groups // per


def _block_diagonal(kernel, groups):
    """(kh, kw, cin/groups, cout) grouped kernel -> (kh, kw, cin, cout) dense, zero off-block."""
    import jax.numpy as jnp

    kh, kw, cin_g, cout = kernel.shape
    cout_g = cout // groups
    k = kernel.reshape(kh, kw, cin_g, groups, cout_g)
    eye = jnp.eye(groups, dtype=kernel.dtype)
    dense = jnp.einsum("hwcgo,gf->hwgcfo", k, eye)  # (kh, kw, g_in, cin_g, g_out, cout_g)
    return dense.reshape(kh, kw, groups * cin_g, groups * cout_g)


@keras.saving.register_keras_serializable(package="senet")
class GroupedConv2D(Conv2D):
    """The name grouped convs had in senet 0.1 (saved models refer to it)."""


@keras.saving.register_keras_serializable(package="senet")
class BatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization (same weights, same training behaviour); at inference on
    PyTorch, channels_last, one native `batch_norm` pass over a view instead of Keras' three
    elementwise passes (a quarter of SE-ResNeXt-50's forward time on the PyTorch backend)."""

    def call(self, inputs, training=None, mask=None):
        if keras.backend.backend() == "torch" and mask is None and not (training and self.trainable) \
                and self.axis in (-1, len(inputs.shape) - 1) and len(inputs.shape) == 4 \
                and str(inputs.dtype).endswith("float32") and self.center and self.scale:
            import torch

            y = torch.nn.functional.batch_norm(
                inputs.permute(0, 3, 1, 2), self.moving_mean.value, self.moving_variance.value,
                self.gamma.value, self.beta.value, False, 0.0, self.epsilon)
            return y.permute(0, 2, 3, 1)
        return super().call(inputs, training=training, mask=mask)


class _ViewPooling:
    """A 2-D pool that, on the PyTorch backend with 'valid' padding, pools the NHWC tensor
    as it is. Keras copies the input to NCHW and pools there, slowly, and its output then
    reaches the next conv in the wrong memory layout; an NHWC tensor is an NCHW one in
    channels_last memory, which PyTorch's pools take as it is."""

    _torch_op = ""  # the torch.nn.functional pool

    def call(self, inputs):
        if keras.backend.backend() == "torch" and self.data_format == "channels_last" \
                and self.padding == "valid" and len(inputs.shape) == 4:
            import torch

            op = getattr(torch.nn.functional, self._torch_op)
            y = op(inputs.permute(0, 3, 1, 2), tuple(self.pool_size), tuple(self.strides))
            return y.permute(0, 2, 3, 1)
        return super().call(inputs)


@keras.saving.register_keras_serializable(package="senet")
class MaxPooling2D(_ViewPooling, layers.MaxPooling2D):
    """Keras' MaxPooling2D (see `_ViewPooling`); on JAX on the CPU, a maximum of slices."""

    _torch_op = "max_pool2d"

    def call(self, inputs):
        if keras.backend.backend() == "jax" and _xla_cpu() \
                and self.data_format == "channels_last" and self.padding == "valid" \
                and len(inputs.shape) == 4:
            return self._jax_max_of_slices(inputs)
        return super().call(inputs)

    def _jax_max_of_slices(self, inputs):
        """The pool as the elementwise maximum of its kh*kw strided slices, which XLA fuses
        into one loop. XLA:CPU's reduce-window runs the stem's 3x3/2 pool slowly, most in
        bfloat16 (through float32): (16, 113, 113, 64) -> 56x56, 44.0 against 4.3 ms in
        bfloat16 and 7.4 against 1.9 in float32 (`benchmarks/jax_layers.py`). The gradient
        stays Keras' (the reduce-window's: all of it to one input of a tie, where the
        slices' maximum would split it)."""
        import jax
        from jax import lax

        (kh, kw), (sh, sw) = self.pool_size, self.strides
        n, h, w, c = inputs.shape
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1

        def pool(x):
            return super(MaxPooling2D, self).call(x)

        @jax.custom_vjp
        def maximum(x):
            y = None
            for i in range(kh):
                for j in range(kw):
                    s = lax.slice(x, (0, i, j, 0), (n, i + sh * (oh - 1) + 1,
                                                    j + sw * (ow - 1) + 1, c), (1, sh, sw, 1))
                    y = s if y is None else lax.max(y, s)
            return y

        maximum.defvjp(lambda x: (maximum(x), x), lambda x, dy: jax.vjp(pool, x)[1](dy))
        return maximum(inputs)


@keras.saving.register_keras_serializable(package="senet")
class AveragePooling2D(_ViewPooling, layers.AveragePooling2D):
    """Keras' AveragePooling2D (see `_ViewPooling`)."""

    _torch_op = "avg_pool2d"


def batch_norm(x, name):
    return BatchNormalization(axis=channel_axis(), epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                              name=keras_name(name))(x)


def conv_bn(x, filters, kernel, name, strides=1, groups=1, relu=True, relu_name=None):
    """Conv (no bias) + BatchNorm (+ ReLU), with symmetric padding of kernel // 2.

    `name` is the Caffe conv name; the BN is `name/bn`, the ReLU `relu_name` or `name/relu`.
    """
    pad = kernel // 2
    if pad and strides > 1:
        x = layers.ZeroPadding2D(pad, name=keras_name(name) + "_pad")(x)
        padding = "valid"
    else:
        padding = "same" if pad else "valid"  # stride 1: 'same' is symmetric, identical
    x = Conv2D(filters, kernel, strides=strides, padding=padding, groups=groups, use_bias=False,
             name=keras_name(name))(x)
    x = batch_norm(x, name + "/bn")
    if relu:
        x = layers.ReLU(name=keras_name(relu_name or name + "/relu"))(x)
    return x


def max_pool(x, name, mode):
    """The stem's 3x3/2 max pool, after a ReLU (so zeros are safe padding).

    "ceil" is Caffe's: no padding, output size rounded up (one zero row/column after gives
    ceil((in - 3) / 2) + 1 windows, Caffe's size for every input). "pad" is PyTorch's
    MaxPool2d(3, 2, padding=1).
    """
    pad = ((0, 1), (0, 1)) if mode == "ceil" else 1
    x = layers.ZeroPadding2D(pad, name=keras_name(name) + "_pad")(x)
    return MaxPooling2D(3, strides=2, name=keras_name(name))(x)


def se_gate(x, prefix, width):
    """Squeeze-and-excitation: global average pool, 1x1 down (`width`) + ReLU, 1x1 up, sigmoid.

    Returns the (N, 1, 1, C) gate; the caller scales its branch by it. Names follow the
    official `<prefix>_global_pool`, `_1x1_down`, `_1x1_up`, `_prob`.
    """
    g = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}_global_pool")(x)
    g = Conv2D(width, 1, name=f"{prefix}_1x1_down")(g)
    g = layers.ReLU(name=f"{prefix}_1x1_down_relu")(g)
    g = Conv2D(channels(x), 1, name=f"{prefix}_1x1_up")(g)
    return layers.Activation("sigmoid", name=f"{prefix}_prob")(g)


def stem(x, variant: Variant):
    """conv1 (one 7x7/2, or three 3x3 convs, the first /2) and the stride-2 pool."""
    names = stem_convs(variant)
    if len(names) == 3:
        relus = ["conv1_1/relu_3x3_s2", "conv1_2/relu_3x3", "conv1_3/relu_3x3"]
        for i, (name, width) in enumerate(zip(names, variant.stem)):
            x = conv_bn(x, width, 3, name, strides=2 if i == 0 else 1, relu_name=relus[i])
    else:
        relu = "conv1/relu_7x7" if variant.family == "inception" else "conv1/relu_7x7_s2"
        x = conv_bn(x, variant.stem[0], 7, names[0], strides=2, relu_name=relu)
    if variant.stem_pool == "avg":
        return AveragePooling2D(2, name="pool1_2x2_s2")(x)
    return max_pool(x, "pool1/3x3_s2", variant.stem_pool)


def _shortcut(x, variant, p, out, strides):
    """The projection shortcut of unit `p`: a (strided) conv + BN, or a 2x2 average pool first."""
    if variant.shortcut == "avg":
        if strides > 1:
            # PyTorch's AvgPool2d(2, ceil_mode=True, count_include_pad=False): Keras' 'same'
            # pads the odd edge after and leaves the padding out of the average, the same.
            x = AveragePooling2D(2, strides=strides, padding="same",
                                 name=f"{p}_1x1_proj_pool")(x)
        return conv_bn(x, out, 1, f"{p}_1x1_proj", relu=False)
    k = variant.proj_kernel if strides > 1 else 1
    return conv_bn(x, out, k, f"{p}_1x1_proj", strides=strides, relu=False)


def residual_unit(x, variant: Variant, stage, unit, widths, strides):
    """One SE residual unit `conv<stage>_<unit>`: branch, SE gate, shortcut, add, ReLU.

    Bottleneck branch: 1x1_reduce, 3x3 (grouped), 1x1_increase; basic branch: 3x3a, 3x3b.
    The stride sits on the 1x1_reduce (Caffe SE-ResNet) or on the first 3x3; anti-aliased
    nets run that 3x3 at stride 1 and pool 2x2/2 after it.
    """
    p = f"conv{stage}_{unit}"
    out = widths[-1]
    names = [p + s for s in unit_convs(variant)]
    aa = variant.anti_alias and strides > 1
    conv_stride = 1 if aa else strides
    if variant.block == "basic":
        y = conv_bn(x, widths[0], 3, names[0], strides=conv_stride)
        if aa:
            y = AveragePooling2D(2, name=f"{names[0]}_aa")(y)
        y = conv_bn(y, widths[1], 3, names[1], relu=variant.relu_before_se)
    else:
        on_1x1 = variant.stride_on == "1x1"
        y = conv_bn(x, widths[0], 1, names[0], strides=strides if on_1x1 else 1)
        y = conv_bn(y, widths[1], 3, names[1], strides=1 if on_1x1 else conv_stride,
                    groups=variant.groups)
        if aa:
            y = AveragePooling2D(2, name=f"{names[1]}_aa")(y)
        y = conv_bn(y, out, 1, names[2], relu=False)
    y = layers.Multiply(name=f"{p}_scale")([y, se_gate(y, p, variant.se_width(out))])

    shortcut = x
    if strides != 1 or channels(x) != out:
        shortcut = _shortcut(x, variant, p, out, strides)
    y = layers.Add(name=p)([y, shortcut])
    return layers.ReLU(name=f"{p}_relu")(y)


def residual_stages(x, variant: Variant):
    """conv2..conv5; returns the output of each stage (strides 4, 8, 16, 32)."""
    features = []
    for i, depth in enumerate(variant.depths):
        stage = i + 2
        widths = variant.stage_widths(i)
        for unit in range(1, depth + 1):
            strides = 2 if (unit == 1 and stage > 2) else 1
            x = residual_unit(x, variant, stage, unit, widths, strides)
        features.append(x)
    return features


def inception_module(x, spec):
    """One SE-BN-Inception module `inception_<id>`: branches, concat, SE scaling.

    Reduction modules (no 1x1 branch) stride their 3x3 convs and max pool by 2. Their pool
    uses 'same' padding so it always matches the convs' ceil(in / 2): identical to Caffe
    wherever Caffe's own sizes agree (even inputs), and still defined for odd ones.
    """
    mid, n1, n3r, n3, nd3r, nd3, pool, nproj = spec
    p = f"inception_{mid}"
    reduce = n1 == 0
    s = 2 if reduce else 1
    branches = []
    if not reduce:
        branches.append(conv_bn(x, n1, 1, f"{p}/1x1", relu_name=f"{p}/relu_1x1"))
    b = conv_bn(x, n3r, 1, f"{p}/3x3_reduce", relu_name=f"{p}/relu_3x3_reduce")
    branches.append(conv_bn(b, n3, 3, f"{p}/3x3", strides=s, relu_name=f"{p}/relu_3x3"))
    b = conv_bn(x, nd3r, 1, f"{p}/double3x3_reduce", relu_name=f"{p}/relu_double3x3_reduce")
    b = conv_bn(b, nd3, 3, f"{p}/double3x3a", relu_name=f"{p}/relu_double3x3a")
    branches.append(conv_bn(b, nd3, 3, f"{p}/double3x3b", strides=s,
                            relu_name=f"{p}/relu_double3x3b"))
    if reduce:
        branches.append(MaxPooling2D(3, strides=2, padding="same",
                                     name=keras_name(f"{p}/pool/3x3_s2"))(x))
    else:
        if pool == "avg":
            # Caffe's padded average pool divides by 9 at the borders too (padding counts).
            b = layers.ZeroPadding2D(1, name=keras_name(f"{p}/pool") + "_pad")(x)
            b = AveragePooling2D(3, strides=1, name=keras_name(f"{p}/pool"))(b)
        else:
            b = MaxPooling2D(3, strides=1, padding="same", name=keras_name(f"{p}/pool"))(x)
        branches.append(conv_bn(b, nproj, 1, f"{p}/pool_proj", relu_name=f"{p}/relu_pool_proj"))
    y = layers.Concatenate(axis=channel_axis(), name=keras_name(f"{p}/concat"))(branches)
    return layers.Multiply(name=keras_name(f"{p}/output"))([y, se_gate(y, p, channels(y) // 16)])


def inception_body(x, modules):
    """conv2 and the Inception modules; returns the maps at strides 4, 8, 16, 32."""
    x = conv_bn(x, 64, 1, "conv2/3x3_reduce", relu_name="conv2/relu_3x3_reduce")
    x = conv_bn(x, 192, 3, "conv2/3x3", relu_name="conv2/relu_3x3")
    features = [x]
    x = max_pool(x, "pool2/3x3_s2", "ceil")
    for spec in modules:
        if spec[1] == 0:  # a grid reduction: the map before it is a feature level
            features.append(x)
        x = inception_module(x, spec)
    features.append(x)
    return features
