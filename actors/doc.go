// Package actors holds the broker's behaviour: one actor per client
// connection, a channel grain per channel (its subscribers and the order of
// its publications), a session grain per user (their live connections) and
// one relay per node that fans publications out to local sockets.
package actors
