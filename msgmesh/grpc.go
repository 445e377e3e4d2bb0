package msgmesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
	pb "github.com/msgmesh/msgmesh/proto/msgmesh/v1"
)

// The gRPC API (docs/grpc.md) lets apps in any language with a gRPC library
// do what the mesh protocol and the HTTP API let them do, served by the same
// machinery, not a copy of it:
//
//   - Register and Deregister are Sidecar.Register and Sidecar.Deregister;
//   - Publish and PublishStream pass checkPublish and publish, as a mesh
//     PUBLISH and an HTTP publish do (header rule, limits, schemas, typed
//     errors, traces); PublishStream spreads a stream's messages over
//     Config.PublishLanes lanes by key, as a mesh connection does;
//   - Subscribe is a push session (detached.go): deliveries go from the
//     upstream consumer into a channel as large as the stream's window (so
//     the push never blocks) and from there, on the stream's own goroutine,
//     to the client, which answers them by id on the same stream;
//   - Pull, Ack and Nack are the HTTP pull (httppull.go): pulled deliveries
//     live in the app's HTTP session, so their ids can be answered over
//     gRPC or HTTP alike.
//
// The app a call acts as is in its metadata, as on the HTTP API: msgmesh-app
// and authorization: Bearer <secret>. Errors are statuses carrying the mesh
// error code (grpcError).

// Metadata keys of the gRPC API (lower case, as gRPC carries them).
const (
	grpcAppKey    = "msgmesh-app"
	grpcAuthKey   = "authorization"
	grpcErrorKey  = "msgmesh-error-code" // trailer: the mesh code of a failed call
	grpcErrDomain = "msgmesh"            // ErrorInfo.Domain
)

// grpcServer implements pb.MeshServer on a Sidecar.
type grpcServer struct {
	pb.UnimplementedMeshServer
	sc *Sidecar
	// stopping ends when the sidecar stops or hands over: PublishStream
	// streams stop reading, answer what they read, and end UNAVAILABLE;
	// health Watch streams end (after they sent NOT_SERVING).
	stopping context.Context
	stop     context.CancelFunc
}

// startGRPC builds the gRPC server on s.grpcLn and serves it in the
// background; without a gRPC listener it does nothing.
func (s *Sidecar) startGRPC() {
	if s.grpcLn == nil {
		return
	}
	g := &grpcServer{sc: s}
	g.stopping, g.stop = context.WithCancel(context.Background())
	s.grpcAPI = g
	s.grpcSrv = grpc.NewServer(
		// A publish of the largest message the limits allow fits; larger
		// ones are refused RESOURCE_EXHAUSTED by gRPC itself.
		grpc.MaxRecvMsgSize(s.cfg.MaxFrameSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Stop (when Shutdown's ctx ends) still waits for handlers, so
		// none runs on after Shutdown returned.
		grpc.WaitForHandlers(true),
		grpc.ChainUnaryInterceptor(unaryErrorTrailer),
		grpc.ChainStreamInterceptor(streamErrorTrailer),
	)
	pb.RegisterMeshServer(s.grpcSrv, g)
	s.grpcHealth = health.NewServer()
	s.grpcHealth.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.grpcHealth.SetServingStatus(pb.Mesh_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s.grpcSrv, healthService{s.grpcHealth, g.stopping})
	srv, ln := s.grpcSrv, s.grpcLn
	s.bg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Debug("grpc listener stopped accepting", "err", err)
		}
	})
}

// GRPCAddr is the gRPC API's address; nil when it is off
// (Config.GRPCListen empty).
func (s *Sidecar) GRPCAddr() net.Addr {
	if s.grpcLn == nil {
		return nil
	}
	return s.grpcLn.Addr()
}

// healthService is the standard health service (grpc.health.v1), whose
// Watch streams end when the sidecar stops: they would otherwise hold
// GracefulStop until its deadline.
type healthService struct {
	*health.Server
	stopping context.Context
}

// Watch is health.Server's, on a stream whose context also ends with
// stopping.
func (h healthService) Watch(req *healthpb.HealthCheckRequest, st healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(st.Context())
	defer cancel()
	defer context.AfterFunc(h.stopping, cancel)()
	return h.Server.Watch(req, watchStream{st, ctx})
}

type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w watchStream) Context() context.Context { return w.ctx }

// grpcNotServing makes the health service answer NOT_SERVING from now on:
// the sidecar is stopping or handing over.
func (s *Sidecar) grpcNotServing() {
	if s.grpcHealth != nil {
		s.grpcHealth.Shutdown()
	}
}

// grpcStopAccepting closes the gRPC listener (the gRPC server's Serve
// returns; its connections go on). In a handoff the successor holds a
// copy of the socket, so new connections wait in the kernel for it.
func (s *Sidecar) grpcStopAccepting() {
	if s.grpcLn != nil {
		_ = s.grpcLn.Close()
	}
}

// stopGRPC ends the gRPC server: PublishStream streams answer what they
// read and end, and GracefulStop waits for the calls in progress until
// ctx ends, then Stop cuts them. Subscribe streams have ended already
// (their push sessions ended with detached.stopAll).
func (s *Sidecar) stopGRPC(ctx context.Context) {
	if s.grpcSrv == nil {
		return
	}
	s.grpcAPI.stop()
	done := make(chan struct{})
	go func() {
		s.grpcSrv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpcSrv.Stop()
		<-done
	}
}

// grpcCode maps a mesh code to the gRPC status code of the gRPC API
// (docs/grpc.md has the table).
func grpcCode(c mesh.Code) codes.Code {
	switch c {
	case mesh.CodeInvalid, mesh.CodeBadFrame, mesh.CodeSchemaInvalid, mesh.CodeMessageTooBig:
		return codes.InvalidArgument
	case mesh.CodeNotRegistered, mesh.CodeNotDeclared, mesh.CodeUnknownRequest, mesh.CodeNoRoute:
		return codes.NotFound
	case mesh.CodeForbidden:
		return codes.PermissionDenied
	case mesh.CodeUnauthorized:
		return codes.Unauthenticated
	case mesh.CodeRateLimited, mesh.CodeStorageFull, mesh.CodeFrameTooLarge:
		return codes.ResourceExhausted
	case mesh.CodeUnavailable, mesh.CodeShuttingDown, mesh.CodeNoHealthyHost, mesh.CodeUpstreamReset:
		return codes.Unavailable
	case mesh.CodeTimeout:
		return codes.DeadlineExceeded
	case mesh.CodeBrokerError:
		return codes.FailedPrecondition
	case mesh.CodeUnsupported:
		return codes.Unimplemented
	}
	return codes.Internal
}

// grpcError is err as a gRPC status: the code of grpcCode, err's text as
// the message, and a google.rpc.ErrorInfo whose reason is the mesh code's
// name (or NOT_FOUND, LIMIT_EXCEEDED for a registration, as the HTTP API
// names them), with metadata retryable "true" or "false".
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status (a canceled stream, say)
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	mc := codeOf(err)
	code, reason, retry := grpcCode(mc), mc.String(), mc.Retryable()
	switch {
	case errors.Is(err, registry.ErrNotFound):
		code, reason, retry = codes.NotFound, "NOT_FOUND", false
	case errors.Is(err, ErrLimit):
		code, reason, retry = codes.ResourceExhausted, "LIMIT_EXCEEDED", false
	}
	st := status.New(code, err.Error())
	if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: grpcErrDomain,
		Metadata: map[string]string{"retryable": strconv.FormatBool(retry)}}); derr == nil {
		st = d
	}
	return st.Err()
}

// errorReason is the ErrorInfo reason of a status error from grpcError;
// "" for none.
func errorReason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == grpcErrDomain {
			return info.Reason
		}
	}
	return ""
}

// unaryErrorTrailer and streamErrorTrailer put a failed call's mesh code
// in the trailer msgmesh-error-code, for clients that do not decode status
// details.
func unaryErrorTrailer(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	if r := errorReason(err); r != "" {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(grpcErrorKey, r))
	}
	return resp, err
}

func streamErrorTrailer(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	err := h(srv, ss)
	if r := errorReason(err); r != "" {
		ss.SetTrailer(metadata.Pairs(grpcErrorKey, r))
	}
	return err
}

// mdGet returns the first value of key in ctx's incoming metadata.
func mdGet(ctx context.Context, key string) string {
	if vs := metadata.ValueFromIncomingContext(ctx, key); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// grpcSecret is the app secret of a call's authorization metadata.
func grpcSecret(ctx context.Context) (string, error) {
	return bearerValue(mdGet(ctx, grpcAuthKey))
}

// grpcIdentity is who a call acts as: the app of its msgmesh-app metadata,
// authenticated as an HTTP request is; nil when it names none.
func (sc *Sidecar) grpcIdentity(ctx context.Context) (*identity, error) {
	secret, err := grpcSecret(ctx)
	if err != nil {
		return nil, err
	}
	id, named, err := sc.namedIdentity(mdGet(ctx, grpcAppKey), secret)
	if err != nil || !named {
		return nil, err
	}
	return &id, nil
}

// grpcConsumer is grpcIdentity for consuming, which must name its app.
func (sc *Sidecar) grpcConsumer(ctx context.Context) (identity, error) {
	id, err := sc.grpcIdentity(ctx)
	if err != nil {
		return identity{}, err
	}
	if id == nil {
		return identity{}, fmt.Errorf("%w: name the app that consumes in the %s metadata", ErrInvalid, grpcAppKey)
	}
	return *id, nil
}

// grpcTrace is the trace context of a call's traceparent and tracestate
// metadata, carried on ctx's cancellation.
func grpcTrace(ctx context.Context) context.Context {
	tc := traceContext(func(k string) string { return mdGet(ctx, k) })
	return mergeCancel(ctx, tc)
}

// mergeCancel returns values's context ending when ctx ends.
func mergeCancel(ctx, values context.Context) context.Context {
	out, cancel := context.WithCancel(values)
	context.AfterFunc(ctx, cancel)
	return out
}

// Register implements pb.MeshServer: Sidecar.Register.
func (g *grpcServer) Register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	secret, err := grpcSecret(ctx)
	if err != nil {
		return nil, grpcError(err)
	}
	if req.Registration == nil {
		return nil, grpcError(fmt.Errorf("%w: registration: missing", ErrInvalid))
	}
	reg := registrationFromProto(req.Registration)
	if app := mdGet(ctx, grpcAppKey); app != "" && app != reg.App {
		return nil, grpcError(fmt.Errorf("%w: the %s metadata names app %q, the registration app %q", ErrInvalid, grpcAppKey, app, reg.App))
	}
	stored, issued, err := g.sc.Register(ctx, reg, secret)
	if err != nil && issued == "" {
		return nil, grpcError(err)
	}
	// With a secret issued the registration is stored: answer with it
	// even if starting its consumers failed, or the secret would be lost.
	return &pb.RegisterResponse{Registration: registrationToProto(stored), Secret: issued}, nil
}

// Deregister implements pb.MeshServer: Sidecar.Deregister.
func (g *grpcServer) Deregister(ctx context.Context, req *pb.DeregisterRequest) (*pb.DeregisterResponse, error) {
	secret, err := grpcSecret(ctx)
	if err != nil {
		return nil, grpcError(err)
	}
	app := req.App
	if app == "" {
		app = mdGet(ctx, grpcAppKey)
	}
	if app == "" {
		return nil, grpcError(fmt.Errorf("%w: name the app to deregister (app, or the %s metadata)", ErrInvalid, grpcAppKey))
	}
	if err := g.sc.Deregister(ctx, app, secret); err != nil {
		return nil, grpcError(err)
	}
	return &pb.DeregisterResponse{}, nil
}

func bindingsFromProto(bs []*pb.Binding) []registry.Binding {
	out := make([]registry.Binding, len(bs))
	for i, b := range bs {
		out[i] = registry.Binding{Group: b.GetGroup(), Topic: b.GetTopic(), MaxAttempts: int(min(b.GetMaxAttempts(), 1<<30)),
			DeadLetterTopic: b.GetDeadLetterTopic(), BrokerGroup: b.GetBrokerGroup(), Tags: b.GetTags()}
	}
	return out
}

func bindingsToProto(bs []registry.Binding) []*pb.Binding {
	out := make([]*pb.Binding, len(bs))
	for i, b := range bs {
		out[i] = &pb.Binding{Group: b.Group, Topic: b.Topic, MaxAttempts: uint32(b.MaxAttempts),
			DeadLetterTopic: b.DeadLetterTopic, BrokerGroup: b.BrokerGroup, Tags: b.Tags}
	}
	return out
}

func registrationFromProto(r *pb.Registration) registry.Registration {
	return registry.Registration{App: r.GetApp(), Produce: bindingsFromProto(r.GetProduce()), Consume: bindingsFromProto(r.GetConsume())}
}

func registrationToProto(r registry.Registration) *pb.Registration {
	out := &pb.Registration{App: r.App, Produce: bindingsToProto(r.Produce), Consume: bindingsToProto(r.Consume)}
	if !r.UpdatedAt.IsZero() {
		out.UpdatedAtUnixNano = r.UpdatedAt.UnixNano()
	}
	return out
}

// publishMessage checks a publish request as every publish is checked
// (checkPublish) and returns the message and its broker.
func (g *grpcServer) publishMessage(id *identity, req *pb.PublishRequest) (broker.Message, broker.Broker, error) {
	if req == nil {
		return broker.Message{}, nil, fmt.Errorf("%w: message: missing", ErrInvalid)
	}
	m := broker.Message{Topic: req.Topic, Key: string(req.Key), Body: req.Body, NullBody: req.NullBody, EmptyKey: req.EmptyKey}
	switch {
	case req.EmptyKey && len(req.Key) > 0:
		return m, nil, fmt.Errorf("%w: empty_key with a %d-byte key; an empty key has no bytes", ErrInvalid, len(req.Key))
	case req.NullBody && len(req.Body) > 0:
		return m, nil, fmt.Errorf("%w: null_body with a %d-byte body; a null body has no bytes", ErrInvalid, len(req.Body))
	}
	if n := len(req.Headers); n > 0 || req.Tag != "" {
		m.Headers = make([]broker.Header, 0, n+1)
		for _, h := range req.Headers {
			m.Headers = append(m.Headers, broker.Header{Key: h.GetKey(), Value: string(h.GetValue())})
		}
		if req.Tag != "" {
			m.Headers = append(m.Headers, broker.Header{Key: broker.HeaderTag, Value: req.Tag})
		}
	}
	b, err := g.sc.checkPublish(id, &m)
	return m, b, err
}

func publishResult(res broker.PublishResult) *pb.PublishResponse {
	return &pb.PublishResponse{Stream: res.Stream, Partition: res.Partition, Offset: res.Offset, MessageId: res.MessageID}
}

// Publish implements pb.MeshServer: one message, answered after the broker
// acknowledged it.
func (g *grpcServer) Publish(ctx context.Context, req *pb.PublishRequest) (*pb.PublishResponse, error) {
	id, err := g.sc.grpcIdentity(ctx)
	if err != nil {
		return nil, grpcError(err)
	}
	m, b, err := g.publishMessage(id, req)
	if err != nil {
		return nil, grpcError(err)
	}
	res, err := g.sc.publish(grpcTrace(ctx), b, &m, req.ContentType)
	if err != nil {
		return nil, grpcError(err)
	}
	return publishResult(res), nil
}

// PublishStream implements pb.MeshServer: a mesh connection's publishing
// over a gRPC stream. Each message read is checked, then published on the
// lane of its key (publishes with the same key keep their order), and
// answered with a PublishAck carrying its id. When the client half-closes,
// every message read is answered before the stream ends; when the sidecar
// stops or hands over, the stream stops reading, answers what it read and
// ends UNAVAILABLE (messages not read were not published: send them again
// on a new stream).
func (g *grpcServer) PublishStream(st pb.Mesh_PublishStreamServer) error {
	ctx := st.Context()
	id, err := g.sc.grpcIdentity(ctx)
	if err != nil {
		return grpcError(err)
	}
	trace := context.WithoutCancel(grpcTrace(ctx))

	// One goroutine sends acks (a stream's Send is not for concurrent
	// use); it goes on draining after a failed Send so lanes never block.
	acks := make(chan *pb.PublishAck, 256)
	sent := make(chan error, 1)
	go func() {
		var sendErr error
		for a := range acks {
			if sendErr == nil {
				sendErr = st.Send(a)
			}
		}
		sent <- sendErr
	}()
	fail := func(n uint64, err error) {
		code := codeOf(err)
		acks <- &pb.PublishAck{Id: n, Error: &pb.Error{Code: code.String(), GrpcCode: int32(grpcCode(code)),
			Message: err.Error(), Retryable: code.Retryable()}}
	}
	type job struct {
		n   uint64
		msg broker.Message
		b   broker.Broker
		ct  string
	}
	lanes := make([]chan job, g.sc.cfg.PublishLanes)
	var wg sync.WaitGroup
	for i := range lanes {
		lanes[i] = make(chan job, 16)
		wg.Go(func() {
			for j := range lanes[i] {
				if ctx.Err() != nil {
					// The client is gone and cannot learn the outcome:
					// publishing now would only add a duplicate of its retry.
					continue
				}
				res, err := g.sc.publish(trace, j.b, &j.msg, j.ct)
				if err != nil {
					fail(j.n, err)
					continue
				}
				acks <- &pb.PublishAck{Id: j.n, Result: publishResult(res)}
			}
		})
	}

	// Recv runs on a goroutine of its own so that the stream can stop
	// reading when the sidecar stops; it ends when the stream does.
	type recvd struct {
		req *pb.PublishStreamRequest
		err error
	}
	in := make(chan recvd)
	quit := make(chan struct{})
	go func() {
		for {
			req, err := st.Recv()
			select {
			case in <- recvd{req, err}:
			case <-quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	lanePick := newLanePicker()
	var seq uint64
	var end error
loop:
	for {
		var r recvd
		select {
		case r = <-in:
		case <-g.stopping.Done():
			end = grpcError(fmt.Errorf("%w: the sidecar is stopping or handing over to a new process; messages this stream sent after the last ack were not published: send them again on a new stream", ErrShuttingDown))
			break loop
		}
		if r.err != nil {
			if !errors.Is(r.err, io.EOF) {
				end = r.err
			}
			break
		}
		seq++
		n := r.req.GetId()
		if n == 0 {
			n = seq
		}
		m, b, err := g.publishMessage(id, r.req.GetMessage())
		if err != nil {
			fail(n, err)
			continue
		}
		lanes[lanePick.pick(m.Key, len(lanes))] <- job{n: n, msg: m, b: b, ct: r.req.GetMessage().GetContentType()}
	}
	close(quit)
	for _, l := range lanes {
		close(l)
	}
	wg.Wait()
	close(acks)
	if err := <-sent; err != nil && end == nil {
		end = err
	}
	return end
}

// Subscribe implements pb.MeshServer: a push session (detached.go) on a
// bidirectional stream. The first request names the subscriptions and the
// window; each delivery then goes to the client at most window
// unanswered, and the client answers by id on the stream. When the
// stream ends, deliveries not answered go back to the broker; when the
// sidecar stops or hands over (the session's Done), the stream ends
// UNAVAILABLE and the client subscribes again (to the new process, after
// an upgrade).
func (g *grpcServer) Subscribe(st pb.Mesh_SubscribeServer) error {
	ctx := st.Context()
	id, err := g.sc.grpcConsumer(ctx)
	if err != nil {
		return grpcError(err)
	}
	secret, _ := grpcSecret(ctx) // checked by grpcConsumer
	first, err := st.Recv()
	if errors.Is(err, io.EOF) {
		return nil // the client closed without subscribing
	}
	if err != nil {
		return err
	}
	sub := first.GetSubscribe()
	if sub == nil {
		return grpcError(fmt.Errorf("%w: the first request of a Subscribe stream is subscribe", ErrInvalid))
	}
	window := g.sc.cfg.MaxInflight
	if w := int(min(sub.Window, 1<<30)); w > 0 && w < window {
		window = w
	}
	// push runs at most window times unanswered, so ch is never full,
	// unless deliveries waiting in it time out (the client has not read
	// the stream for a delivery timeout) and their slots are used again:
	// then the session ends (overflow).
	ch := make(chan Delivery, window)
	var overflow atomic.Bool
	ps, err := g.sc.OpenPushSession(id.app, secret, "grpc", window, func(d Delivery) error {
		select {
		case ch <- d:
			return nil
		default:
			overflow.Store(true)
			return fmt.Errorf("%w: push past the window of %d", errProtocol, window)
		}
	})
	if err != nil {
		return grpcError(err)
	}
	defer ps.Close() // what the stream still holds goes back to the broker
	if err := ps.Subscribe(subscriptions(sub)); err != nil {
		return grpcError(err)
	}
	if err := st.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_Subscribed{Subscribed: &pb.Subscribed{Window: uint32(window)}}}); err != nil {
		return err
	}

	// The receiving goroutine settles answers itself (a broker call
	// each) and passes what must be sent, or the error that ends the
	// stream, to this one, the only one that sends.
	ctrl := make(chan *pb.SubscribeResponse, 16)
	ended := make(chan error, 1)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		send := func(r *pb.SubscribeResponse) bool {
			select {
			case ctrl <- r:
				return true
			case <-quit:
				return false
			}
		}
		for {
			req, err := st.Recv()
			if err != nil {
				ended <- err
				return
			}
			var resp *pb.SubscribeResponse
			switch r := req.Request.(type) {
			case *pb.SubscribeRequest_Ack:
				resp = unknownIDs(r.Ack.GetDeliveryIds(), func(did string) bool { return ps.Ack(did) })
			case *pb.SubscribeRequest_Nack:
				delay := time.Duration(r.Nack.GetDelayMs()) * time.Millisecond
				resp = unknownIDs(r.Nack.GetDeliveryIds(), func(did string) bool { return ps.Nack(did, delay) })
			case *pb.SubscribeRequest_Subscribe:
				if w := int(r.Subscribe.GetWindow()); w != 0 && w != window {
					ended <- grpcError(fmt.Errorf("%w: window %d: the window of a stream is set by its first request (%d in force)", ErrInvalid, w, window))
					return
				}
				if err := ps.Subscribe(subscriptions(r.Subscribe)); err != nil {
					ended <- grpcError(err)
					return
				}
				resp = &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Subscribed{Subscribed: &pb.Subscribed{Window: uint32(window)}}}
			default:
				ended <- grpcError(fmt.Errorf("%w: an empty request", ErrInvalid))
				return
			}
			if resp != nil && !send(resp) {
				return
			}
		}
	}()

	stopped := func() error {
		if overflow.Load() {
			return status.Error(codes.ResourceExhausted, "msgmesh: the stream did not take its deliveries within the delivery timeout (--delivery-timeout); they went back to the broker: read the stream, and subscribe again")
		}
		return grpcError(fmt.Errorf("%w: the sidecar is stopping or handing over to a new process; subscribe again (deliveries this stream did not answer go back to the broker and come again)", ErrShuttingDown))
	}
	for {
		select {
		case d := <-ch:
			select {
			case <-ps.Done():
				return stopped() // d went back to the broker with the rest
			default:
			}
			if err := st.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_Delivery{Delivery: grpcDelivery(d.ID(), d.Message())}}); err != nil {
				return err
			}
		case r := <-ctrl:
			if err := st.Send(r); err != nil {
				return err
			}
		case err := <-ended:
			if errors.Is(err, io.EOF) {
				return nil // the client is done: what it did not answer goes back
			}
			return err
		case <-ps.Done():
			return stopped()
		}
	}
}

// subscriptions converts a Subscribe request's subscriptions (push mode).
func subscriptions(s *pb.Subscribe) []mesh.Subscription {
	out := make([]mesh.Subscription, len(s.GetSubscriptions()))
	for i, x := range s.GetSubscriptions() {
		out[i] = mesh.Subscription{Group: x.GetGroup(), Topic: x.GetTopic(), Mode: mesh.ModePush}
	}
	return out
}

// unknownIDs settles each id with settle and returns the Unknown answer
// listing those that were not in flight; nil when all were.
func unknownIDs(ids []string, settle func(string) bool) *pb.SubscribeResponse {
	var unknown []string
	for _, did := range ids {
		if !settle(did) {
			unknown = append(unknown, did)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	return &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Unknown{Unknown: &pb.Unknown{DeliveryIds: unknown}}}
}

// grpcDelivery converts a delivery's wire form (with message flags) to the
// gRPC message. Strings that must be UTF-8 in protobuf and may not be (a
// header name, a tag) have invalid bytes replaced; header values, keys
// and bodies are bytes and pass unchanged.
func grpcDelivery(did string, m mesh.Message) *pb.Delivery {
	d := &pb.Delivery{DeliveryId: did, Group: m.Group, Topic: m.Topic, MessageId: strings.ToValidUTF8(m.MessageID, "\uFFFD"),
		Key: []byte(m.Key), EmptyKey: m.Flags.EmptyKey(), Body: m.Body, NullBody: m.Flags.NullBody(),
		Redelivered: m.Redelivered, TimestampUnixNano: m.Timestamp}
	if len(m.Headers) > 0 {
		d.Headers = make([]*pb.Header, len(m.Headers))
		for i, h := range m.Headers {
			d.Headers[i] = &pb.Header{Key: strings.ToValidUTF8(h.Key, "\uFFFD"), Value: []byte(h.Value)}
			if strings.EqualFold(h.Key, broker.HeaderTag) {
				d.Tag = strings.ToValidUTF8(h.Value, "\uFFFD")
			}
		}
	}
	return d
}

// Pull implements pb.MeshServer: an HTTP pull (startHTTPPull) answered over
// gRPC. Its deliveries are the app's HTTP session's: Ack and Nack (or the
// HTTP API) answer them.
func (g *grpcServer) Pull(ctx context.Context, req *pb.PullRequest) (*pb.PullResponse, error) {
	sc := g.sc
	id, err := sc.grpcConsumer(ctx)
	if err != nil {
		return nil, grpcError(err)
	}
	k := routeKey{group: req.Group, topic: req.Topic}
	if err := sc.mayConsume(sc.snap.Load(), &id, k); err != nil {
		return nil, grpcError(err)
	}
	max := int(min(req.Max, uint32(sc.cfg.MaxInflight)))
	if max == 0 {
		max = 1
	}
	wait := min(time.Duration(req.WaitMs)*time.Millisecond, maxPullWait)
	pw, ch, err := sc.startHTTPPull(grpcTrace(ctx), id, k, max, wait)
	if err != nil {
		return nil, grpcError(err)
	}
	var res mesh.PullResult
	select {
	case res = <-ch:
	case <-ctx.Done():
		// The client went away (or its deadline passed): what the pull
		// holds was never seen.
		pw.finish()
		res = <-ch
		pw.s.handBack(res.Messages)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	out := &pb.PullResponse{Deliveries: make([]*pb.Delivery, len(res.Messages))}
	for i, m := range res.Messages {
		out.Deliveries[i] = grpcDelivery(pw.s.deliveryID(m.DeliveryID), m)
	}
	return out, nil
}

// Ack implements pb.MeshServer: pulled deliveries acked by id.
func (g *grpcServer) Ack(ctx context.Context, req *pb.AckRequest) (*pb.AckResponse, error) {
	return g.answer(ctx, req.DeliveryIds, answerAck, 0)
}

// Nack implements pb.MeshServer: pulled deliveries handed back by id.
func (g *grpcServer) Nack(ctx context.Context, req *pb.NackRequest) (*pb.AckResponse, error) {
	return g.answer(ctx, req.DeliveryIds, answerNack, time.Duration(req.DelayMs)*time.Millisecond)
}

// answer settles the pulled deliveries ids name with a, as the HTTP API's
// batch ack and nack do; when none of them was in flight the call fails
// NOT_FOUND (UNKNOWN_REQUEST), as a single HTTP ack does.
func (g *grpcServer) answer(ctx context.Context, ids []string, a answer, delay time.Duration) (*pb.AckResponse, error) {
	sc := g.sc
	id, err := sc.grpcConsumer(ctx)
	if err != nil {
		return nil, grpcError(err)
	}
	if n := len(ids); n == 0 || n > sc.cfg.MaxInflight {
		return nil, grpcError(fmt.Errorf("%w: delivery_ids: %d ids; send 1 to %d (the in-flight bound, --max-inflight)", ErrInvalid, n, sc.cfg.MaxInflight))
	}
	s := sc.httpSession(id.app)
	res := &pb.AckResponse{}
	for _, did := range ids {
		if s.settleByID(did, a, delay) {
			res.Answered++
		} else {
			res.Unknown = append(res.Unknown, did)
		}
	}
	if res.Answered == 0 {
		return nil, grpcError(fmt.Errorf("%w: %q not in flight for app %q: never pulled by it, already answered, timed out back to the broker (--delivery-timeout), or pulled from an earlier sidecar process", ErrUnknownDelivery, ids, id.app))
	}
	return res, nil
}
