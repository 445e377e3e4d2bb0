// Package flowctl is the sidecar's flow control (docs/design.md flow 12;
// docs/flow-control.md): per-topic publish rates and message sizes,
// per-group delivery rates and in-flight bounds, and a circuit breaker per
// broker cluster, all changed at run time with Controller.Apply.
//
// The sidecar reaches it through one stage of its pipeline (Stage; package
// pipeline has the order of all stages):
//
//   - publish, before anything is queued or sent: CheckSize (ErrTooLarge);
//   - publish, in the goroutine that will call the broker, under the
//     publish deadline: WaitPublish (waits, or ErrRateLimited), then
//     Breaker(cluster).Allow; Record(err) once the broker answered
//     (ErrBreakerOpen fails fast while the cluster keeps failing);
//   - delivery, before taking the next message from the broker:
//     WaitDelivery (the group's rate) and WaitInflight (its in-flight
//     bound), whose Permit the pipeline holds until the delivery is
//     settled.
//
// Every refusal is a typed error with details (*LimitError,
// *BreakerOpenError) that also carries its wire code (Code) and its
// metrics label (Reason). Rates use golang.org/x/time/rate token buckets.
//
// The Controller has no goroutines; waits are bounded by the caller's
// context.
package flowctl
