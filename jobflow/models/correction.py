"""The fitted language correction of each embedding model (collection ``similaritycorrections``).

One header per model (``_id`` = the model) names the version in force; one
document per language and version holds that language's transform as float32
bytes. Every worker reads the same version, so every process computes the
same lists.
"""
from mongoengine import DateTimeField, DictField, Document, FloatField, IntField, StringField


class CorrectionHeader(Document):
    """Which version of a model's correction is in force, and how it came about."""
    meta = {"collection": "similaritycorrections", "strict": False}

    id = StringField(primary_key=True)          # the embedding model
    version = IntField(default=0)
    fittedAt = DateTimeField()
    jobs = IntField()                           # jobs the fit read
    counts = DictField()                        # language -> jobs its statistics came from
    movement = FloatField()                     # how far this version moved vectors from the one before
    listsVersion = IntField(default=0)          # the version the stored lists were last fully computed with
