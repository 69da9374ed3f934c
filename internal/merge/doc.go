// Package merge merges sorted sequences into one sorted sequence.
//
// The proxy uses it to turn the per-shard streams of search hits, each
// already sorted by the shard, into one global order. [New] builds a loser
// tree (a tournament tree that keeps the loser of each match in the node)
// over k [Sequence] values; every later element then costs about log2(k)
// comparisons and no allocations.
//
// # Ordering
//
// Every input must already be sorted by the less function given to [New], and
// less must be a strict weak ordering. The merge is stable: among equal
// elements (neither less than the other) the one from the sequence with the
// lower index in the arguments to [New] comes first, and elements of one
// sequence keep their order. The output is therefore the same as
// concatenating the inputs in index order and sorting the result stably. If
// an input is not sorted the merge still yields every element exactly once,
// but not in sorted order; the merge does not check.
//
// # Laziness and blocking
//
// A [Tree] holds at most one element per sequence and asks a sequence for its
// next element only once its current element has been handed out: the first
// call to [Tree.Next] advances every sequence once, in index order, and each
// later call advances exactly one sequence, the one reported by
// [Tree.Source]. Taking m elements therefore costs k+m-1 calls to
// [Sequence.Next] (plus one per sequence that runs dry), which is what lets
// the caller stop reading a network stream as soon as it has the top K hits.
//
// The flip side is that the merge is only as fast as its slowest input: if a
// sequence's Next blocks, [Tree.Next] blocks with it, and nothing can be
// emitted before every sequence has produced its first element, because any
// of them might hold the smallest one. Callers that must not be stalled by
// one slow stream should buffer or time out inside the Sequence itself; they
// can call [Tree.Source] to learn which stream the next [Tree.Next] will wait
// on.
//
// # Errors
//
// [Sequence] has no error result. A stream that fails should return false
// from Next and keep its error for the caller to check after the merge (the
// way [bufio.Scanner] does); the merge treats it as exhausted, so a failed
// input silently shortens the output unless the caller looks.
package merge
