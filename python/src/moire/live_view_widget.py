"""The napari dock widget of the live view (`moire.live_view.LiveView`): the result bus's endpoint,
Connect / Disconnect, and a status line; napari lists it under Plugins → Moiré live view (the
package's npe2 manifest). Needs Qt (qtpy and a binding)."""
from __future__ import annotations

from typing import Any, Optional

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from .live_view import LiveView


def make_widget(napari_viewer: Any) -> Any:
    """napari's widget contribution (napari.yaml): the dock widget for this viewer."""
    return LiveViewWidget(napari_viewer)


class LiveViewWidget(QWidget):
    """The dock widget: the result bus's endpoint, Connect / Disconnect, and what has been shown.
    A timer polls the `LiveView` every `interval_ms` in the viewer's (Qt) thread, taking at most
    `messages_per_tick` messages each time: a viewer that fell behind catches up over several ticks
    and stays responsive meanwhile."""

    def __init__(
        self, napari_viewer: Any, endpoint: str = "tcp://127.0.0.1:5570", interval_ms: int = 50,
        messages_per_tick: int = 1000,
    ) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.messages_per_tick = messages_per_tick
        self.view: Optional[LiveView] = None
        self.endpoint = QLineEdit(endpoint)
        self.button = QPushButton("Connect")
        self.status = QLabel("not connected")
        row = QHBoxLayout()
        row.addWidget(self.endpoint)
        row.addWidget(self.button)
        column = QVBoxLayout(self)
        column.addLayout(row)
        column.addWidget(self.status)
        self.button.clicked.connect(self.toggle)
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.poll)

    def toggle(self) -> None:
        """Connects to the endpoint typed, or disconnects."""
        if self.view is None:
            self.view = LiveView(self.viewer, self.endpoint.text().strip())
            self.button.setText("Disconnect")
            self.status.setText(f"waiting for a run on {self.view.endpoint}")
            self.timer.start()
        else:
            self.timer.stop()
            self.view.close()
            self.view = None
            self.button.setText("Connect")
            self.status.setText("not connected")

    def poll(self) -> None:
        view = self.view
        if view is None:
            return
        view.poll(max_messages=self.messages_per_tick)
        run = view.start.run if view.start else "no run yet"
        ended = f", ended: {view.stop.reason}" if view.stop else ""
        self.status.setText(f"{run}: {view.received} frames received, {len(view.shown)} layers{ended}")
