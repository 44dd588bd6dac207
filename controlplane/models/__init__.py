"""Every model module, imported so that Base.metadata knows all tables (Alembic reads it)."""

from .base import Base, utcnow
from .accounts import User
from .drives import Drive
from .jobs import Job
from .servers import DriveClaim, Resource, Server
from .sandboxes import Image, Sandbox
from .tokens import Token
from .workspaces import Project, Workspace
from .submissions import Submission
from .orgs import LoginFailure, Organization
from .pads import Pad, PadEnvironment, PadEvent, PadQuestion, Question
from .consoles import PadSnapshot, PadUpdate, SshKey, Ticket

__all__ = ["Base", "utcnow", "User", "Drive", "Job", "Server", "DriveClaim", "Resource", "Image", "Sandbox",
           "Token", "Project", "Workspace", "Submission", "Organization", "LoginFailure", "Pad", "PadEnvironment",
           "PadEvent", "PadQuestion", "Question", "Ticket", "SshKey", "PadUpdate", "PadSnapshot"]
