"""Weights files: one module per format, the source layouts, downloads and the cache.

- `caffe`, `torch_format`, `tf1_checkpoint`: readers of the published formats (safetensors
  is read by its own library, in `sources`);
- `native`: the project's own `.weights.h5`;
- `layouts`: each source's parameter names mapped onto the models' layer names;
- `sources`: any file to mapped arrays; `hub`: downloads and the cache;
- `loader`: the `weights=` argument, used by `senet.models`.
None of them imports Keras or the model builder.
"""
