// Package fleet is the hub's view of its host cluster: the connection to
// it (one controller-runtime manager for informers and controllers, with
// leader election), the registered clusters as Cluster objects
// ([Clusters]), the status the hub writes on them ([StatusUpdater]), and
// which replica leads ([Leadership]).
//
// It imports no other hub package: the session registry plugs in as
// [Sessions] and member clients as a function, so the hub's state in its
// host cluster stays apart from how requests are carried.
package fleet
