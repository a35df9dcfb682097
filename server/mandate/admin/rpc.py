"""AdminService: importing and exporting worlds, erasing a person (admin callers only: the
plumbing refuses every other caller with ADMIN_ONLY)."""

from __future__ import annotations

from mandate.admin.service import Admin
from mandate.admin.worldfile import json_record
from mandate.errors import InvalidArgument
from mandate.runtime import validate as v
from mandate.runtime.requests import RequestIds
from mandate.runtime.retries import idempotent
from mandate.v1 import admin_pb2, admin_pb2_grpc, directory_pb2


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, admin: Admin, requests: RequestIds, run=None):
        self.admin = admin
        self.requests = requests
        self.run = run  # runs blocking work in the server's worker pool (see runtime/pool.py)

    async def Import(self, requests, context):
        """The records arrive first (held as received: no thread waits on the network); they
        are read, checked and written in a worker, in one transaction."""
        on_conflict = None
        received = []
        async for request in requests:
            if on_conflict is None:
                on_conflict = v.choice("on_conflict", request.on_conflict, ["fail", "skip", "touch"], default="fail")
            received.extend(request.records)
        result = await self.run(context, self._import, received, on_conflict or "fail")
        return admin_pb2.ImportSummary(records=result.records, revision=str(result.revision),
                                       counts=result.counts, skipped=result.skipped)

    def _import(self, received, on_conflict):
        # A list: the import runs again whole if the database aborts it (mandate.shared.retrying).
        records = [json_record(r.json, r.line or number) for number, r in enumerate(received, 1)]
        return self.admin.import_records(records, on_conflict)

    async def Export(self, request, context):
        at_revision = v.revision("at_revision", request.at_revision)
        as_of = v.moment("as_of", request.as_of)
        if at_revision is not None and as_of is not None:
            raise InvalidArgument("as_of", "give at_revision or as_of, not both")
        chunks = self.admin.export(at_revision, as_of)
        try:
            revision = str(await self.run(context, next, chunks))
            sent = False
            while True:
                chunk = await self.run(context, next, chunks, None)
                if chunk is None:
                    break
                sent = True
                yield admin_pb2.ExportChunk(records=chunk, revision=revision)
            if not sent:  # an empty world still tells its revision
                yield admin_pb2.ExportChunk(revision=revision)
        finally:
            chunks.close()

    @idempotent(directory_pb2.WriteResponse)
    def ErasePerson(self, request, context):
        revision = self.admin.erase_person(v.identifier("user_id", request.user_id))
        return directory_pb2.WriteResponse(revision=str(revision))
