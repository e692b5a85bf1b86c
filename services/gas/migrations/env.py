from citygrid.migrate import run_env
from services.gas.models import Base

run_env(Base.metadata)
