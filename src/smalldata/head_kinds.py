"""Every kind of head a model folder can hold: importing this registers them all (`head_io`).

A new kind registers itself in its own module (`@register_head`) and is listed here; `model.py`
imports this, never a head module.
"""

import smalldata.describe  # noqa: F401  described-head
import smalldata.ensemble  # noqa: F401  averaged-logistic-regression
import smalldata.finetune  # noqa: F401  fine-tuned-image
import smalldata.finetune_text  # noqa: F401  contrastive-text
import smalldata.heads  # noqa: F401  linear-head
