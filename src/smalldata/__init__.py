"""smalldata: the most accurate classifier a few labeled images or texts can give, honestly evaluated.

    import smalldata
    data = smalldata.load_dataset("photos/")          # photos/CLASS/*.jpg, or a CSV of text,label
    model = smalldata.train(data)                      # baseline + heads, cross-validated; best refit
    model.predict(["a.jpg"]); model.save("flowers-model")
    model = smalldata.Model.load("flowers-model")
"""

from smalldata.data import DataError, Dataset, load_dataset, load_image_folder, load_text_csv
from smalldata.evaluate import Comparison, TestResult
from smalldata.model import Model, ModelFolderError
from smalldata.train import train
from smalldata.zero_shot import zero_shot_model
from smalldata.unlabeled import load_pool, pool_from

__all__ = [
    "Comparison",
    "DataError",
    "Dataset",
    "Model",
    "ModelFolderError",
    "TestResult",
    "load_dataset",
    "load_image_folder",
    "load_text_csv",
    "train",
    "load_pool",
    "pool_from",
    "zero_shot_model",
]
