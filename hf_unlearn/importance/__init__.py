"""Per-parameter importance estimates used by one-shot unlearning methods.

- :mod:`.fisher`: SSD's diagonal Fisher importance, selection and dampening.
- :mod:`.saliency`: SalUn's gradient-saliency weight masks.
"""
