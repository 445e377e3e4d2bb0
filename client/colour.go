package client

import "context"

// HeaderColour is the header a message's colour travels in
// (Message.Colour; docs/routing.md).
const HeaderColour = "Msgmesh-Colour"

// colourKey is the context key of a colour (WithColour).
type colourKey struct{}

// WithColour returns ctx carrying colour: a Publish with ctx (or a context
// derived from it) gives its message that colour unless the message has
// its own. Operators' routing rules send coloured messages to the
// instances their labels select (docs/routing.md). The handler's ctx of a
// Subscribe, and Delivery.Context, already carry the delivery's colour, so
// what a handler publishes with them inherits it, the way a trace does.
// An empty colour removes it.
func WithColour(ctx context.Context, colour string) context.Context {
	return context.WithValue(ctx, colourKey{}, colour)
}

// ColourFrom returns the colour ctx carries (WithColour), "" for none.
func ColourFrom(ctx context.Context) string {
	c, _ := ctx.Value(colourKey{}).(string)
	return c
}

// withDeliveryColour is base carrying d's colour, when it has one.
func withDeliveryColour(base context.Context, d *Delivery) context.Context {
	if d.Colour == "" {
		return base
	}
	return WithColour(base, d.Colour)
}
