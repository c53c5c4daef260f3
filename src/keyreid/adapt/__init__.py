"""Unsupervised domain adaptation, cluster-contrast style (Dai et al. 2021): the pieces an adaptation
run trains with, and the run itself (`keyreid adapt`).

* :mod:`keyreid.adapt.jaccard`: sparse k-reciprocal Jaccard distances among the target images;
* :mod:`keyreid.adapt.cluster`: DBSCAN pseudo-labels on them, or one line saying why not;
* :mod:`keyreid.adapt.memory`: the cluster memory (momentum-updated centroids) and its
  InfoNCE loss; :mod:`keyreid.adapt.camera_memory`: camera-aware proxies (CAP);
* :mod:`keyreid.adapt.target`: the unlabelled target set, its true labels sealed;
* :mod:`keyreid.adapt.method`: the adaptation as a method of the one training loop
  (:func:`adapt`, :class:`Adaptation`); :mod:`keyreid.adapt.config`: its typed settings.
"""

from keyreid.adapt.cluster import Clusters, cluster
from keyreid.adapt.jaccard import ClusteringError, jaccard_distance
from keyreid.adapt.camera_memory import CameraProxyMemory
from keyreid.adapt.memory import ClusterMemory

__all__ = ["CameraProxyMemory", "ClusterMemory", "Clusters", "ClusteringError", "cluster", "jaccard_distance"]
