"""Job declarations of the training loop (:mod:`utils.Train_Test`): the twin jobs
(:mod:`jobs.twins`), what the weight-space jobs share (:mod:`jobs.encoder_jobs`) and what
the MNIST INR jobs share (:mod:`jobs.inr_jobs`). Jobs may import every package below them
(``neural_graphs``, ``models``, ``modules``, ``utils``); only the scripts import jobs."""
