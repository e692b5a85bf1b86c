from citygrid.migrate import run_env
from services.muck.models import Base

run_env(Base.metadata)
