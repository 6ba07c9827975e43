"""A job posting, its embedding and its precomputed similar jobs (collection ``jobs``)."""
from datetime import datetime

from bson import ObjectId
from mongoengine import (
    DateTimeField,
    DictField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    FloatField,
    IntField,
    ListField,
    ObjectIdField,
    StringField,
)

from jobflow.models.fields import VectorField

JOB_STATUSES = ("active", "closed", "draft", "expired")
EMBEDDING_STATUSES = ("pending", "processing", "completed", "failed")


class Embedding(EmbeddedDocument):
    """The embedding of a job's text, and how it was made."""
    meta = {"strict": False}

    status = StringField(choices=EMBEDDING_STATUSES)
    vector = VectorField()
    model = StringField()
    dimensions = IntField()
    textHash = StringField()
    recipe = StringField()      # how the texts became the vector (embeddings.text.RECIPE); absent: the first recipe
    language = StringField()    # the language the similarity correction used: the job's field, else detected
    tokens = IntField()
    generatedAt = DateTimeField()
    error = StringField()
    retries = IntField(default=0)


class SimilarJob(EmbeddedDocument):
    """One entry of a job's similar-jobs list."""
    meta = {"strict": False}

    jobId = ObjectIdField(required=True)
    score = FloatField(required=True)


class Job(Document):
    """A posting of the job board. Fields written by other applications survive a save."""
    meta = {
        "collection": "jobs",
        "strict": False,
        # Every index costs every write of a job (a list written, a vector stored) on the embedded database,
        # so each one here serves a query the product makes; models.OBSOLETE_INDEXES names those dropped.
        "indexes": [
            "status",
            "category",
            "updatedAt",
            "externalId",
            # Counts by embedding state and model, tokens per minute, case-insensitive title prefix search.
            {"fields": ["embedding.status", "embedding.model"], "name": "embedding_status_model"},
            {"fields": ["embedding.generatedAt"], "name": "embedding_generated"},
            {"fields": ["title"], "name": "title_ci", "collation": {"locale": "en", "strength": 2}},
        ],
    }

    title = StringField()
    description = StringField()
    company = StringField()
    location = StringField()
    category = StringField()
    status = StringField(default="active")
    employmentType = StringField()
    salaryRange = StringField()
    language = StringField()
    externalId = StringField()
    createdAt = DateTimeField()     # set by whoever writes the job (the API: at create); absent stays absent
    updatedAt = DateTimeField()
    embedding = EmbeddedDocumentField(Embedding)
    similarJobs = ListField(EmbeddedDocumentField(SimilarJob))
    similarityMetadata = DictField()

    PUBLIC_FIELDS = ("title", "description", "company", "location", "category", "status",
                     "employmentType", "salaryRange", "language", "externalId")

    @classmethod
    def _from_son(cls, son, *args, **kwargs):
        """Build from a stored document that any application may have written: what does not fit is left out."""
        return super()._from_son(fitted(son), *args, **kwargs)


_TEXT = ("title", "description", "company", "location", "category", "employmentType", "salaryRange", "language",
         "externalId")
_EMBEDDING_TEXT = ("status", "model", "textHash", "language", "error")


def fitted(son: dict) -> dict:
    """A copy of a job document with every value of the wrong type left out (a status that is not text becomes
    "invalid", so it is never taken for active); the document as stored is untouched."""
    son = dict(son)
    for name in _TEXT:
        if son.get(name) is not None and not isinstance(son[name], str):
            son.pop(name)
    if "status" in son and not isinstance(son["status"], str):
        son["status"] = "invalid"
    for name in ("createdAt", "updatedAt"):
        if son.get(name) is not None and not isinstance(son[name], datetime):
            son[name] = None
    embedding = son.get("embedding")
    if embedding is not None:
        if not isinstance(embedding, dict):
            son.pop("embedding")
        else:
            embedding = dict(embedding)
            for name in _EMBEDDING_TEXT:
                if embedding.get(name) is not None and not isinstance(embedding[name], str):
                    embedding.pop(name)
            if embedding.get("status") not in (None, *EMBEDDING_STATUSES):
                embedding.pop("status")
            for name in ("dimensions", "tokens", "retries"):
                if embedding.get(name) is not None and not isinstance(embedding[name], int):
                    embedding.pop(name)
            if embedding.get("generatedAt") is not None and not isinstance(embedding["generatedAt"], datetime):
                embedding.pop("generatedAt")
            if embedding.get("vector") is not None and not isinstance(embedding["vector"], (bytes, list)):
                embedding.pop("vector")
            son["embedding"] = embedding
    similar = son.get("similarJobs")
    if similar is not None:
        son["similarJobs"] = [entry for entry in similar if isinstance(entry, dict)
                              and isinstance(entry.get("jobId"), ObjectId)
                              and isinstance(entry.get("score"), (int, float))] if isinstance(similar, list) else []
    if son.get("similarityMetadata") is not None and not isinstance(son["similarityMetadata"], dict):
        son.pop("similarityMetadata")
    return son


class JobNote(Document):
    """A job id noted for every worker's index sync: when, and until when it is kept (the server deletes it then)."""
    meta = {"abstract": True, "indexes": [
        {"fields": ["at"], "name": "newest"},
        {"fields": ["expiresAt"], "name": "expire", "expireAfterSeconds": 0},
    ]}

    id = ObjectIdField(primary_key=True)
    at = DateTimeField(required=True)
    expiresAt = DateTimeField(required=True)


class JobDeletion(JobNote):
    """A deleted job, kept a day: each worker's index sync takes it out of its index and of the lists that held it."""
    meta = {"collection": "jobdeletions"}
