"""Old import paths of modules that moved: the old name is the new module
(same object, so attributes and monkeypatching agree) with a DeprecationWarning."""
import sys
import warnings


def alias(old_name, module, until="0.3"):
    """Make the module being imported as ``old_name`` be ``module``."""
    warnings.warn(f"{old_name} is now {module.__name__}; the old name goes away in {until}",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old_name] = module
