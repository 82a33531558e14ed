"""The errors smalldata raises for input a person can fix: each message says what is wrong and what
to do. A module that imports nothing, so that any module may raise them, and the command line
catches them (and nothing else: a bug shows its traceback) without loading the library at start-up.

Each is re-exported where it was first defined: `smalldata.data.DataError`,
`smalldata.model_folder.ModelFolderError` (and `smalldata.model.ModelFolderError`),
`smalldata.images.ImageFileError`.
"""


class DataError(ValueError):
    """Input that cannot be used as it is; the message says what to do."""


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded; the message says why and what to do."""


class ImageFileError(ValueError):
    """An image file no model can use, found before decoding it; the message says what is wrong."""
