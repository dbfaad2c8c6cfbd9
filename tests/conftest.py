"""Import order for the one process that runs every test.

Test files that import Keras directly load TensorFlow before `hpacam.tf` can import triton first
(see hpacam/tf/__init__.py), and a later torchvision import then crashes the process. Loading the
package's guard here, before any test module, keeps any selection and order of tests safe.
"""

import hpacam.tf  # noqa: F401
