from citygrid.migrate import run_env
from services.vision.models import Base

run_env(Base.metadata)
