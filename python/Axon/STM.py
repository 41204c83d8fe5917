# SPDX-License-Identifier: MIT
"""Axon.STM on libaxstm: a drop-in for Kamaelia's Axon.STM.

Existing programs import it unchanged:

    from Axon.STM import Store, ConcurrentUpdate, BusyRetry

Store, Value, Collection, ConcurrentUpdate and BusyRetry are the axstm
package's own (so `except Axon.STM.ConcurrentUpdate` also catches what an
axstm.Store raises).  Axon here is a namespace package holding only this
module: where Kamaelia's own Axon is installed, that one is imported
instead (see python/README).
"""

from axstm import BusyRetry, Collection, ConcurrentUpdate, Store, Value

__all__ = ["Store", "Value", "Collection", "ConcurrentUpdate", "BusyRetry"]
