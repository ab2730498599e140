"""One folder per backend, each with the same modules:

- ``emit``: the op table (IR op -> that framework's call) and the class templates
  the code generator fills in; it never holds a layer's formula;
- ``runtime``: what flowbridge itself needs to drive the framework in-process
  (tensor conversion, devices, autodiff Jacobians, cache-free calls).
"""
