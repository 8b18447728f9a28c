"""``python -m mmseg_custom.datasets [DATA_ROOT]``: write the synthetic shapes data set."""
from .synthetic_shapes import main

main()
