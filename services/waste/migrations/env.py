from citygrid.migrate import run_env
from services.waste.models import Base

run_env(Base.metadata)
