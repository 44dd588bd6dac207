"""Every model module, imported so that Base.metadata knows all tables (Alembic reads it)."""

from .base import Base, utcnow
from .accounts import User
from .drives import Drive
from .jobs import Job

__all__ = ["Base", "utcnow", "User", "Drive", "Job"]
