package client_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// TestOversizedFrameFromSidecarIsSkipped: a frame from the sidecar over
// WithMaxFrameSize is skipped and the connection goes on: the publish it
// answers fails with ErrFrameTooLarge, a DELIVER is answered ERROR
// FRAME_TOO_LARGE, and the next publish on the same connection works.
func TestOversizedFrameFromSidecarIsSkipped(t *testing.T) {
	p := newPeer(t)
	c := dial(t, p, client.WithMaxFrameSize(4096))
	pc := p.accept(t)
	pc.handshake(t)

	done := make(chan error, 1)
	go func() {
		_, err := c.Publish(testCtx(t), &client.Message{Topic: "t", Body: []byte("a")})
		done <- err
	}()
	f := pc.expect(t, mesh.KindPublish, false)
	pc.send(mesh.KindPublishAck, mesh.FlagResponse, f.ID, &mesh.PublishAck{Stream: "S", MessageID: strings.Repeat("m", 10_000)})
	if err := <-done; !errors.Is(err, mesh.ErrFrameTooLarge) {
		t.Fatalf("publish answered by an oversized frame: %v, want ErrFrameTooLarge", err)
	}

	pc.send(mesh.KindDeliver, 0, 77, &mesh.Message{DeliveryID: 77, Group: "g", Topic: "t", Body: make([]byte, 10_000)})
	e := pc.expect(t, mesh.KindError, true)
	var me mesh.Error
	if err := me.Decode(e.Payload); err != nil || e.ID != 77 || me.Code != mesh.CodeFrameTooLarge {
		t.Fatalf("answer to an oversized DELIVER: #%d %+v %v, want ERROR FRAME_TOO_LARGE for #77", e.ID, me, err)
	}

	go func() {
		_, err := c.Publish(testCtx(t), &client.Message{Topic: "t", Body: []byte("b")})
		done <- err
	}()
	f = pc.expect(t, mesh.KindPublish, false)
	pc.send(mesh.KindPublishAck, mesh.FlagResponse, f.ID, &mesh.PublishAck{Stream: "S", Partition: -1, Offset: 2})
	if err := <-done; err != nil {
		t.Fatalf("publish after the oversized frames: %v", err)
	}
	if n := p.accepted.Load(); n != 1 {
		t.Fatalf("the client connected %d times; the oversized frames broke the connection", n)
	}
}
