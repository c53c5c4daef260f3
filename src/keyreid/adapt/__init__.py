"""Unsupervised domain adaptation, cluster-contrast style (Dai et al. 2021): the pieces an adaptation
run trains with (the training loop and `keyreid adapt` are still to come, issue 25).

* :mod:`keyreid.adapt.jaccard`: sparse k-reciprocal Jaccard distances among the target images;
* :mod:`keyreid.adapt.cluster`: DBSCAN pseudo-labels on them, or one line saying why not;
* :mod:`keyreid.adapt.memory`: the cluster memory (momentum-updated centroids) and its
  InfoNCE loss.
"""

from keyreid.adapt.cluster import Clusters, cluster
from keyreid.adapt.jaccard import ClusteringError, jaccard_distance
from keyreid.adapt.memory import ClusterMemory

__all__ = ["ClusterMemory", "Clusters", "ClusteringError", "cluster", "jaccard_distance"]
