"""Model registry: teachers, the proxy and students, all behind one feature contract."""

from eupe.models.features import Encoder, EncoderSpec, Features, run_teacher
from eupe.models.proxy import ProxyConfig, count_parameters, load_proxy, save_proxy
from eupe.models.students import create_student, list_students, student_spec
from eupe.models.teachers import create_teacher, list_teachers, teacher_spec, teacher_weights_path
from eupe.models.weights import MissingWeightsError
from eupe.registry import UnknownNameError

__all__ = [
    "Encoder", "EncoderSpec", "Features", "MissingWeightsError", "ProxyConfig", "UnknownNameError",
    "count_parameters", "create_student", "create_teacher", "list_students", "list_teachers",
    "load_proxy", "run_teacher", "save_proxy", "student_spec", "teacher_spec", "teacher_weights_path",
]
